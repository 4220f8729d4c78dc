"""`pacore infer` input errors surface before any engine starts, with file, line, id or URL."""
import json
import subprocess
import sys
import time

from megatron_pacore.cli import main


def run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


def test_malformed_input_line(tmp_path, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": "a", "problem": "x"}\n{"id": "b", "problem": \n')
    code, err = run(["infer", "--model", str(tmp_path), "--input", str(f), "--output", str(tmp_path / "o.jsonl"),
                     "--level", "low"], capsys)
    assert code == 2 and f"{f}:2: malformed JSON" in err


def test_missing_model_dir(tmp_path, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": "a", "problem": "x"}\n')
    code, err = run(["infer", "--model", str(tmp_path / "no_such_model"), "--input", str(f),
                     "--output", str(tmp_path / "o.jsonl"), "--widths", "2"], capsys)
    assert code == 2 and "model directory not found" in err and "no_such_model" in err


def test_bad_widths(tmp_path, capsys):
    code, err = run(["infer", "--model", "m", "--input", "i", "--output", "o", "--widths", "4,x"], capsys)
    assert code == 2 and "comma-separated positive integers" in err


def test_bad_vllm_arg(tmp_path, capsys):
    code, err = run(["infer", "--model", "m", "--input", "i", "--output", "o", "--level", "low",
                     "--vllm-arg", "tensor_parallel_size"], capsys)
    assert code == 2 and "--vllm-arg must be KEY=VALUE" in err


def test_resume_with_everything_done_starts_nothing(tmp_path, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": "a", "problem": "x"}\n')
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps({"id": "a", "final_response": "kept"}) + "\n")
    # The model does not exist: had the job tried to start an engine, this would fail.
    code, _ = run(["infer", "--model", str(tmp_path / "none"), "--input", str(f), "--output", str(out),
                   "--level", "low", "--resume"], capsys)
    assert code == 0 and json.loads(out.read_text())["final_response"] == "kept"


def test_unreachable_server_fails_within_seconds_naming_the_url(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": "a", "problem": "x"}\n')
    url = f"http://127.0.0.1:{port}/v1"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "megatron_pacore.cli", "infer", "--model", url, "--input", str(f),
                           "--output", str(tmp_path / "o.jsonl"), "--level", "low"],
                          capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode != 0
    assert f"127.0.0.1:{port}" in proc.stderr
