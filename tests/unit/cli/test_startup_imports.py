"""`pacore` imports only what the subcommand needs: parsing a command line and loading the
job modules pulls in no engine, plot library, HTTP SDK or YAML parser (each costs start-up
time before the first request; benchmarks/cli_startup.py measures it)."""
import json
import subprocess
import sys

HEAVY = ("matplotlib", "openai", "torch", "vllm", "transformers", "omegaconf", "math_verify")

PROBE = """
import json, sys
from megatron_pacore.cli import build_parser
from megatron_pacore.config import InferConfig
from megatron_pacore.config_cli import config_from_args
from megatron_pacore.eval.config import EvalConfig
args = build_parser().parse_args(sys.argv[1:])
cfg = config_from_args(InferConfig if args.command == "infer" else EvalConfig, args)
if args.command == "infer":
    import megatron_pacore.infer
    from megatron_pacore.inference.factory import is_url, make_generator
    if is_url(cfg.generation.model):  # the client an http(s) --model gets, made as the job makes it
        make_generator(**cfg.generation.engine_kwargs())
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def loaded(argv):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_infer_parses_and_loads_its_job_without_heavy_imports():
    mods = loaded(["infer", "--model", "http://127.0.0.1:1/v1", "--input", "i", "--output", "o", "--level", "low"])
    assert "megatron_pacore" in mods
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))


def test_eval_parses_without_heavy_imports():
    mods = loaded(["eval", "--model", "/ckpt", "--report", "r", "--levels", "low,medium"])
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))
