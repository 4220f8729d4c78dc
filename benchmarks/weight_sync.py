#!/usr/bin/env python
"""Weight sync Megatron (TP=2) -> colocated vLLM (TP=2) against one in-memory copy of the bytes.

    python benchmarks/weight_sync.py [--dtype bf16] [--reps 3] [--bucket-mb 256] [--no-check] [--no-gather] [--prefetch]

Launches itself under `torchrun --nproc_per_node 2` (CPU, gloo). A Qwen2.5-0.5B-shaped model
(hidden 896, 24 layers, 14 heads / 2 KV heads, vocabulary 151936, tied embeddings: ~494M
parameters) with random weights is built twice in each process: as the Megatron actor's
TP shard, and as vLLM's TP shard (`load_format=dummy`, so nothing is read from disk).

Timed, --reps times, every rank at once:
  sync: `ColocatedVLLM.sync_weights(export_buckets(actor, actor_info, groups, bucket_bytes, dtype))`
        as the trainer calls it. Here (same TP, same processes, PP=1) it takes the per-rank
        path: each rank converts its own shard to the engine's slices (no gather; only the
        embedding rows vLLM splits differently from Megatron move, point to point) and copies
        them into its modules. Broken down into gather/convert (producing the slices), engine
        load (the copies into vLLM's parameters) and repack (post-load kernel layouts, i.e.
        vLLM's CPU GEMM prepack, the tied lm_head's, the prefix-cache reset);
  copy: the full model in HF layout (what each rank received on the gather path, twice what
        the per-rank path moves at TP=2) copied once in memory, tensor by tensor into a
        preallocated buffer (export time excluded). The baseline stays the full model's bytes
        per rank: it is the same yardstick as before the per-rank path, and the per-rank path
        does not make the engine hold fewer bytes, only gather fewer.
  gather path: the same sync forced through the gather path (`weight_sync.rank_shards=False`:
        what any other layout takes: engine TP != actor TP, PP > 1), same breakdown;
  engine side only: the gather path again from the same buckets exported beforehand and kept
        in memory (what the engine costs without the actor's gathers).
Printed: the repetition with the median total (its parts: gather/convert + load + repack),
then `check_weights` after the last per-rank sync (every engine weight equal to the actor's,
read back through vLLM's prepacked GEMMs), and last `sync_ratio=X` (median per-rank sync
seconds / median copy seconds, the slower rank of each). Target X <= 3.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DTYPES = {"bf16": ("bfloat16", "bf16"), "fp32": ("float32", "fp32")}


def write_model_dir(out: Path, dtype: str) -> None:
    """config.json of a Qwen2.5-0.5B-shaped model and the tiny tokenizer (no weights)."""
    from megatron_pacore.testing.tiny import build_tokenizer
    from transformers import Qwen2Config

    tok = build_tokenizer(out, 0)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096,
                tie_word_embeddings=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                eos_token_id=eos, bos_token_id=eos, dtype=DTYPES[dtype][0]).save_pretrained(out)


def launch(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="weight_sync_"))
    write_model_dir(work, args.dtype)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0", PYTHONWARNINGS="ignore")
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2", __file__,
           "--worker", str(work), "--dtype", args.dtype, "--reps", str(args.reps),
           "--bucket-mb", str(args.bucket_mb)] + ([] if args.check else ["--no-check"]) \
        + (["--prefetch"] if args.prefetch else []) + ([] if args.engine_only else ["--no-engine-only"]) \
        + ([] if args.gather else ["--no-gather"])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        return proc.returncode or 1
    for ln in lines:
        print(ln[len("BENCH "):])
    return 0


def _median_rep(reps: list[dict]) -> dict:
    """The repetition with the median total, so that its parts add up."""
    return sorted(reps, key=lambda r: r["total_s"])[len(reps) // 2]


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    from transformers import AutoConfig

    from megatron_pacore.checkpoint.export import export_buckets, export_hf_tensors
    from megatron_pacore.inference.rollout import ColocatedVLLM
    from megatron_pacore.inference.rollout_types import RolloutEngineConfig, WeightSyncConfig
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, destroy_parallel, initialize_parallel

    vllm_dtype, precision = DTYPES[args.dtype]
    groups = initialize_parallel(ParallelConfig(tp=2, device="cpu"))
    rank = dist.get_rank()
    hf_config = AutoConfig.from_pretrained(args.worker)
    actor, actor_info = build_actor(hf_config, groups, ModelOptions(precision=precision))
    gen = torch.Generator().manual_seed(0)  # the same draws on both ranks: replicas stay equal
    with torch.no_grad():
        for p in actor.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    sync = WeightSyncConfig(bucket_bytes=args.bucket_mb << 20, prefetch=args.prefetch)
    engine = ColocatedVLLM(RolloutEngineConfig(
        model=args.worker, tensor_parallel_size=2, dtype=vllm_dtype, max_model_len=512,
        show_progress=False, enable_prefix_caching=False, engine_args={"load_format": "dummy"}), sync)
    bucket_bytes = args.bucket_mb << 20
    dtype = engine.dtype

    keys = ("total_s", "gather_s", "wait_s", "load_s", "repack_s")

    def slowest(x: float) -> float:
        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.item()

    def slower_rank(stats) -> dict:
        """The breakdown of the rank whose sync took longer (its parts add up)."""
        mine = {k: getattr(stats, k) for k in keys}
        both: list = [None] * dist.get_world_size()
        dist.all_gather_object(both, mine)
        return max(both, key=lambda r: r["total_s"])

    def copy_once() -> tuple[float, int]:
        """Copy every exported tensor once into a preallocated buffer (export not timed)."""
        dst = torch.zeros(bucket_bytes, dtype=torch.uint8)  # touched: a warm destination
        seconds, total = 0.0, 0
        for bucket in export_buckets(actor, actor_info, groups, bucket_bytes=bucket_bytes, dtype=dtype):
            flat = [t.reshape(-1).view(torch.uint8) for _, t in bucket]
            big = max(f.numel() for f in flat)
            if big > dst.numel():
                dst = torch.zeros(big, dtype=torch.uint8)
            dist.barrier()
            t0 = time.perf_counter()
            off = 0
            for f in flat:
                if off + f.numel() > dst.numel():
                    off = 0
                dst[off:off + f.numel()].copy_(f)
                off += f.numel()
            seconds += time.perf_counter() - t0
            total += sum(f.numel() for f in flat)
        return seconds, total

    syncs, copies, gathers, engine_only = [], [], [], []
    stats = None
    for _ in range(args.reps):
        dist.barrier()
        stats = engine.sync_weights(export_buckets(actor, actor_info, groups, bucket_bytes=bucket_bytes, dtype=dtype))
        syncs.append(slower_rank(stats))
        copy_s, copied = copy_once()
        copies.append(slowest(copy_s))
    if args.gather:
        engine.sync_config = WeightSyncConfig(bucket_bytes=bucket_bytes, prefetch=args.prefetch, rank_shards=False)
        for _ in range(args.reps):
            dist.barrier()
            g = engine.sync_weights(export_buckets(actor, actor_info, groups, bucket_bytes=bucket_bytes, dtype=dtype))
            gathers.append(slower_rank(g))
        gather_stats = g
    if args.engine_only:
        # The engine's side alone: the same buckets, exported once beforehand and kept.
        kept = list(export_buckets(actor, actor_info, groups, bucket_bytes=bucket_bytes, dtype=dtype))
        for _ in range(args.reps):
            dist.barrier()
            s = engine.sync_weights(iter(kept))
            engine_only.append(slower_rank(s))
        del kept
    med = _median_rep(syncs)
    copy_med = statistics.median(copies)
    check = None
    if args.check:
        engine.sync_config = sync  # the last sync before the check: the per-rank path
        engine.sync_weights(export_buckets(actor, actor_info, groups, bucket_bytes=bucket_bytes, dtype=dtype))
        t0 = time.perf_counter()
        c = engine.check_weights(export_hf_tensors(actor, actor_info, groups, dtype=dtype))
        check = {"tensors": c.tensors, "engine_tensors": c.engine_tensors, "method": c.method,
                 "max_abs_diff": c.max_abs_diff, "seconds": round(time.perf_counter() - t0, 1)}
    if rank == 0:
        gb = copied / 1e9
        params = copied / torch.empty(0, dtype=dtype).element_size()
        print(f"BENCH model: {params / 1e6:.0f}M parameters (Qwen2.5-0.5B shape, tied), {args.dtype}, "
              f"TP=2 actor + TP=2 vLLM in 2 CPU processes; {stats.tensors} HF tensors, {gb:.2f} GB "
              f"full model per rank; {args.reps} reps (the median one, slower rank)", flush=True)
        print(f"BENCH sync ({stats.path} path, {stats.bytes / 1e9:.2f} GB of slices on this rank) "
              f"{med['total_s']:.3f} s = gather/convert {med['wait_s']:.3f} s + engine load "
              f"{med['load_s']:.3f} s + repack {med['repack_s']:.3f} s")
        if gathers:
            gm = _median_rep(gathers)
            print(f"BENCH gather path ({gather_stats.buckets} buckets of <= {args.bucket_mb} MB, "
                  f"{gather_stats.bytes / 1e9:.2f} GB per rank) {gm['total_s']:.3f} s = wait for gather "
                  f"{gm['wait_s']:.3f} s + engine load {gm['load_s']:.3f} s + repack {gm['repack_s']:.3f} s "
                  f"({gm['total_s'] / copy_med:.2f} x copy); gather {gm['gather_s']:.3f} s in all "
                  f"({'overlapped with the load' if args.prefetch else 'not overlapped'})")
        print(f"BENCH copy {copy_med:.3f} s  ({copied / 1e9 / copy_med:.2f} GB/s, the full model's {gb:.2f} GB)")
        if engine_only:
            eo = _median_rep(engine_only)
            print(f"BENCH engine side only (buckets exported beforehand): {eo['total_s']:.3f} s = load "
                  f"{eo['load_s']:.3f} s + repack {eo['repack_s']:.3f} s  ({eo['total_s'] / copy_med:.2f} x copy)")
        print("BENCH all reps: " + json.dumps({"sync": syncs, "copy": copies, "gather": gathers,
                                               "engine_only": engine_only}))
        if check is not None:
            print(f"BENCH check_weights: {json.dumps(check)}")
        print(f"BENCH sync_ratio={med['total_s'] / copy_med:.2f}")
    engine.close()
    destroy_parallel()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--bucket-mb", type=int, default=256)
    p.add_argument("--no-check", dest="check", action="store_false", help="skip check_weights")
    p.add_argument("--no-engine-only", dest="engine_only", action="store_false",
                   help="skip the extra syncs from buckets exported beforehand (engine side alone)")
    p.add_argument("--no-gather", dest="gather", action="store_false",
                   help="skip the syncs forced through the gather path (the other layouts' path)")
    p.add_argument("--prefetch", action="store_true",
                   help="export the next bucket on a helper thread while the engine loads (weight_sync.prefetch)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reps < 1 or args.bucket_mb < 1:
        raise ValueError("--reps and --bucket-mb must be >= 1")
    if args.worker:
        worker(args)
        return 0
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
