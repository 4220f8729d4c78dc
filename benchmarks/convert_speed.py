#!/usr/bin/env python
"""Time and peak memory of HF -> Megatron(TP=2) -> HF against a plain safetensors load + save.

    python benchmarks/convert_speed.py [--gb 1.0] [--reps 3] [--workdir DIR] [--keep]

A random Llama-style checkpoint of about --gb GB (bf16, untied, GQA; 8 layers at 1 GB) is
written once, streamed. Then, --reps times alternately, each in a fresh subprocess:

  baseline: safetensors.torch.load_file(backend="pread") of the checkpoint + save_file of the
            same tensors + fsync of the file;
  convert:  hf_to_megatron(--tp 2) into a Megatron torch_dist checkpoint, then megatron_to_hf
            back to safetensors (what tools/convert_hf.py runs), each direction followed by an
            fsync of every file it wrote.

Both sides read with plain reads (pread), not mmap: an mmapped load counts the file's mapped
page-cache pages in its RSS, which our own reader never maps, and would inflate the baseline's
peak. Both sides sync what they write, inside the timing, so that neither is timed into the
page cache while the other waits for the disk.

Timing is of the work only: interpreter start and imports are excluded (they are constant,
~2 s for the baseline and ~4-6 s for the converter, and reported as wall_s), and every timed
pass starts after os.sync() so that no pass inherits another's dirty pages. Peak memory is
each child's own peak RSS (VmHWM, imports included; ru_maxrss would report the parent's).

The round trip moves the bytes twice (two reads, two writes) where the baseline moves them
once, so the printed ratio is per pass:
    convert_ratio = (hf_to_megatron_s + megatron_to_hf_s) / (2 * baseline_s)
    peak_mem_ratio = convert peak RSS / baseline peak RSS
(the JSON report also gives the raw round trip / one baseline as round_trip_ratio). Targets:
X <= 2, Y <= 1.5. The round trip is checked to be bit-identical.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRELUDE = """
def peak_rss_bytes():
    \"\"\"This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries the parent's high-water
    mark across fork + exec into it, so every child would report the parent's peak.\"\"\"
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def fsync_tree(path):
    \"\"\"fsync every file under `path` (or `path` itself) and every directory holding one.\"\"\"
    import os
    files = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    for name in files + sorted({os.path.dirname(os.path.abspath(f)) for f in files}):
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
"""

BASELINE = PRELUDE + """
import json, sys, time
import torch
from safetensors.torch import load_file, save_file
import os
os.sync()
start = time.perf_counter()
tensors = load_file(sys.argv[1], backend="pread")  # plain reads, as our reader does; no mmap
save_file(tensors, sys.argv[2])
fsync_tree(sys.argv[2])
print(json.dumps({"work_s": time.perf_counter() - start, "peak_bytes": peak_rss_bytes()}))
"""

CONVERT = PRELUDE + """
import json, sys, time
from megatron_pacore.checkpoint.convert import hf_to_megatron, megatron_to_hf
from megatron_pacore.checkpoint.hf_io import load_hf_config
import os
load_hf_config(sys.argv[1])  # imports transformers' config classes: imports are not conversion work
os.sync()
start = time.perf_counter()
hf_to_megatron(sys.argv[1], sys.argv[2], tp=2)
fsync_tree(sys.argv[2])
to_megatron = time.perf_counter() - start
os.sync()  # each direction starts, like the baseline, with no dirty pages (not timed)
start = time.perf_counter()
megatron_to_hf(sys.argv[2], sys.argv[3])
fsync_tree(sys.argv[3])
to_hf = time.perf_counter() - start
print(json.dumps({"work_s": to_megatron + to_hf, "to_megatron_s": to_megatron, "to_hf_s": to_hf,
                  "peak_bytes": peak_rss_bytes()}))
"""


def make_checkpoint(out: Path, gb: float) -> dict:
    """A random bf16 Llama checkpoint of ~gb GB, written tensor by tensor."""
    import torch
    from transformers import LlamaConfig

    from megatron_pacore.checkpoint.hf_io import HFStreamWriter, expected_shapes

    hidden, inter, vocab = 2048, 5632, 32000
    per_layer = 2 * (2 * hidden * hidden + 2 * hidden * hidden // 2 + 3 * hidden * inter)
    layers = max(2, round((gb * 1e9 - 2 * 2 * vocab * hidden) / per_layer) // 2 * 2)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=16, num_key_value_heads=8, vocab_size=vocab,
                      tie_word_embeddings=False, dtype="bfloat16", max_position_embeddings=4096)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(out)
    shapes = expected_shapes(cfg)
    writer = HFStreamWriter(out, [(n, s, torch.bfloat16) for n, s in shapes.items()], shard_bytes=1 << 40)
    gen = torch.Generator().manual_seed(0)
    for name, shape in shapes.items():
        writer.write(name, (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16))
    writer.close()
    return {"layers": layers, "bytes": writer.total_bytes}


def run(cmd: list[str]) -> dict:
    """Run a child; its last-line JSON (work seconds, peak RSS) plus wall seconds including
    interpreter start and imports."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out, err = proc.stdout, proc.stderr
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=1.0, help="checkpoint size in GB")
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--reps", type=int, default=3, help="alternating repetitions (medians reported)")
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="convert_speed_"))
    src, py = work / "hf", sys.executable
    info = make_checkpoint(src, args.gb)
    shard = src / "model.safetensors"
    with open(shard, "rb") as f:  # warm the page cache for both contenders
        while f.read(64 << 20):
            pass
    base, conv = [], []
    for rep in range(args.reps):  # alternate, so that disk and cache drift hit both alike
        base.append(run([py, "-c", BASELINE, str(shard), str(work / "plain.safetensors")]))
        shutil.rmtree(work / "megatron", ignore_errors=True)
        shutil.rmtree(work / "back", ignore_errors=True)
        conv.append(run([py, "-c", CONVERT, str(src), str(work / "megatron"), str(work / "back")]))
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    import torch

    a, b = HFCheckpoint(src), HFCheckpoint(work / "back")
    identical = sorted(a.names()) == sorted(b.names()) and all(torch.equal(a.get(n), b.get(n)) for n in a.names())
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    report = {"checkpoint_gb": round(info["bytes"] / 1e9, 3), "layers": info["layers"], "identical": identical,
              "reps": args.reps,
              "baseline_work_s": round(med(base, "work_s"), 2), "baseline_wall_s": round(med(base, "wall_s"), 2),
              "baseline_peak_gb": round(max(r["peak_bytes"] for r in base) / 1e9, 3),
              "convert_work_s": round(med(conv, "work_s"), 2), "convert_wall_s": round(med(conv, "wall_s"), 2),
              "hf_to_megatron_s": round(med(conv, "to_megatron_s"), 2),
              "megatron_to_hf_s": round(med(conv, "to_hf_s"), 2),
              "convert_peak_gb": round(max(r["peak_bytes"] for r in conv) / 1e9, 3)}
    report["round_trip_ratio"] = round(report["convert_work_s"] / report["baseline_work_s"], 2)
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if not identical:
        raise SystemExit("round trip is not bit-identical")
    ratio = report["convert_work_s"] / (2 * report["baseline_work_s"])
    mem = report["convert_peak_gb"] / report["baseline_peak_gb"]
    print(f"convert_ratio={ratio:.2f} peak_mem_ratio={mem:.2f}")


if __name__ == "__main__":
    main()
