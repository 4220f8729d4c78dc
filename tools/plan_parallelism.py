"""Per-GPU memory of a PaCoRe PPO run (actor, critic, vLLM) and a TP/PP/CP/DP layout that fits.

    python tools/plan_parallelism.py --model /ckpt/Qwen3-8B --seq-len 131072 \
        --gpus-per-node 8 --gpu-mem 80 --nodes 4 [--json]

--model is a checkpoint directory or its config.json. The formulas and their sources are in
megatron_pacore/training/planner.py; this is its command line.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def load_hf_config(path: str):
    """A transformers config from a checkpoint directory or a config.json file."""
    from transformers import AutoConfig

    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise SystemExit(f"--model {path}: no config.json there")
    try:
        data = json.loads(p.read_text())
        return AutoConfig.for_model(data.pop("model_type"), **data)
    except (KeyError, ValueError) as e:
        raise SystemExit(f"--model {p}: not a Hugging Face model config ({e})")


def main(argv=None) -> int:
    from megatron_pacore.training.planner import ModelShape, PlanConfig, choose_layout

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint directory or config.json")
    ap.add_argument("--seq-len", type=int, required=True, help="tokens per (packed) training sequence")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--gpu-mem", type=float, default=80.0, help="GB per GPU")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--rollout-batch", type=int, default=1024, help="sequences per PPO iteration")
    ap.add_argument("--vllm-tp", type=int, default=None, help="vLLM tensor parallel size (default: tp)")
    ap.add_argument("--memory-fraction", type=float, default=0.9)
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--json", action="store_true", help="print the layout and bytes as JSON")
    args = ap.parse_args(argv)

    shape = ModelShape.from_hf(load_hf_config(args.model))
    try:
        cfg = PlanConfig(seq_len=args.seq_len, gpus_per_node=args.gpus_per_node, gpu_mem_gb=args.gpu_mem,
                         nodes=args.nodes, rollout_batch=args.rollout_batch, vllm_tp=args.vllm_tp,
                         memory_fraction=args.memory_fraction, precision=args.precision)
        plan = choose_layout(shape, cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    mem = plan.memory
    if args.json:
        print(json.dumps({**asdict(plan.layout), "recompute": plan.recompute, "sequence_parallel": plan.layout.tp > 1,
                          "bytes_per_gpu": mem.components, "training_peak": mem.training_peak,
                          "rollout_peak": mem.rollout_peak, "usable": mem.usable,
                          "rollout_sequences": mem.rollout_sequences, "fits": mem.fits}, indent=2))
        return 0
    L = plan.layout
    print(f"model: {shape.total_params() / 1e9:.2f}B parameters, seq_len {cfg.seq_len}, "
          f"{cfg.nodes} node(s) x {cfg.gpus_per_node} GPUs x {cfg.gpu_mem_gb:g} GB")
    print(f"layout: tp={L.tp} pp={L.pp} cp={L.cp} dp={L.dp} recompute={plan.recompute} "
          f"sequence_parallel={L.tp > 1} ({plan.considered} layouts considered)")
    for name, value in mem.components.items():
        print(f"  {name:<30} {value / 1e9:9.2f} GB")
    print(f"training peak {mem.training_peak / 1e9:.2f} GB, rollout peak {mem.rollout_peak / 1e9:.2f} GB, "
          f"usable {mem.usable / 1e9:.2f} GB per GPU; KV cache room for {mem.rollout_sequences} full-length "
          "sequences per GPU")
    for layout, recompute in plan.alternatives:
        print(f"  also fits: tp={layout.tp} pp={layout.pp} cp={layout.cp} dp={layout.dp} recompute={recompute}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
