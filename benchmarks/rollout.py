"""The trainer's rollout phase against a flat `LLM.generate` of the same prompts and lengths.

    python benchmarks/rollout.py [--problems 8] [--samples 8] [--tokens 96] [--reps 3]
    # relaunches itself under torchrun (2 CPU processes, vLLM TP=2 external launcher);
    # last line: rollout_ratio=X     (target X <= 1.10)

Both sides run in the same two processes on the same colocated engine, alternating, on the
same synthesis prompts (the training sampler over a toy message pool) with the same sampling
parameters and `ignore_eos`, so every response has exactly --tokens tokens on both sides:
- rollout: `trainer.rollout` (chat templates rendered and tokenized, `ColocatedVLLM.generate`
  with per-token log-probs, samples collected prompt-major);
- flat: `vllm.LLM.generate` of the already-tokenized prompts with the same SamplingParams.
The ratio is the median rollout time over the median flat time.
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


def records(n: int):
    from megatron_pacore.data.train_records import TrainRecord

    out = []
    for i in range(n):
        a, b = 100 + 7 * i, 250 + 13 * i
        responses = [f"<think>{a} plus {b}</think> The sum is \\boxed{{{a + b + d}}}." for d in (0, 1, 0, 3, 0, 10, 0, 2)]
        out.append(TrainRecord(id=f"p{i}", conversation=[{"role": "user", "content": f"Compute {a} + {b}."}],
                               responses=responses, answer=str(a + b), correct=[d == 0 for d in (0, 1, 0, 3, 0, 10, 0, 2)]))
    return out


def worker(args) -> None:
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from megatron_pacore.data.sampler import MessageSampler, SamplerConfig
    from megatron_pacore.inference.rollout import ColocatedVLLM
    from megatron_pacore.inference.rollout_types import RolloutEngineConfig
    from megatron_pacore.trainer import rollout
    from megatron_pacore.types import SamplingSettings

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    engine = ColocatedVLLM(RolloutEngineConfig(model=args.model, tensor_parallel_size=2, max_model_len=2048,
                                               show_progress=False))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    sampler = MessageSampler(records(args.problems), SamplerConfig(num_problems=args.problems, min_messages=4,
                                                                   max_messages=8, samples_per_problem=args.samples))
    sampling = SamplingSettings(max_tokens=args.tokens, temperature=1.0, ignore_eos=True)
    prompts = sampler.next_batch()
    from vllm import TokensPrompt

    times = {"rollout": [], "flat": []}
    for rep in range(args.reps + 1):  # the first round warms both paths up
        t = time.perf_counter()
        prompt_ids, samples = rollout(engine, tokenizer, prompts, sampling, args.samples, tp=2)
        rollout_s = time.perf_counter() - t
        params = [engine.sampling_params(len(p), sampling, args.samples) for p in prompt_ids]
        inputs = [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids]
        t = time.perf_counter()
        outs = engine.llm.generate(inputs, params, use_tqdm=False)
        flat_s = time.perf_counter() - t
        flat_tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
        tokens = sum(len(s.response_token_ids) for s in samples)
        assert tokens == flat_tokens == args.problems * args.samples * args.tokens, (tokens, flat_tokens)
        if rep == 0:
            continue
        times["rollout"].append(rollout_s)
        times["flat"].append(flat_s)
        if rank == 0:
            print(f"rep {rep}: rollout {rollout_s:.3f}s flat {flat_s:.3f}s ({tokens} tokens each)", flush=True)
    if rank == 0:
        r, f = statistics.median(times["rollout"]), statistics.median(times["flat"])
        prompt_tokens = sum(len(p) for p in prompt_ids)
        print(f"prompts={len(prompts)} x n={args.samples}, prompt tokens {prompt_tokens}, response tokens "
              f"{args.problems * args.samples * args.tokens}; rollout {r:.3f}s flat {f:.3f}s; "
              f"{args.problems * args.samples * args.tokens / r:.0f} generated tok/s")
        print("all reps: " + json.dumps(times))
        print(f"rollout_ratio={r / f:.3f}")
    engine.close()  # also tears down the process group vLLM joined


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=8)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--tokens", type=int, default=96)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--model", default=None, help="HF checkpoint (default: a tiny model made offline)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    tmp = tempfile.mkdtemp(prefix="bench_rollout_")
    if args.model is None:
        from megatron_pacore.testing.tiny import make_tiny_model

        args.model = str(make_tiny_model(Path(tmp) / "tiny", "qwen3", 0))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", VLLM_CPU_KVCACHE_SPACE="1",
               VLLM_LOGGING_LEVEL="WARNING", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, "--worker",
           "--model", args.model, "--problems", str(args.problems), "--samples", str(args.samples),
           "--tokens", str(args.tokens), "--reps", str(args.reps)]
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(("rep ", "prompts=", "all reps", "rollout_ratio"))]
    print("\n".join(lines))
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
