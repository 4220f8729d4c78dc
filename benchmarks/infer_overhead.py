#!/usr/bin/env python
"""Overhead of the PaCoRe runner over a flat batch of the same samples.

    python benchmarks/infer_overhead.py [--problems 64] [--tokens 128] [--reps 5] [--model DIR]

Both sides generate exactly the same samples at the same lengths (ignore_eos): level low,
i.e. per problem 4 round-1 samples of the problem and 1 round-2 sample of the synthesis prompt.

  runner: PaCoReRunner on the in-process async engine (round 2 of a problem waits for its
          round 1; problems pipeline);
  flat:   one `vllm.LLM.generate` call over all those prompts at once (round-1 prompts with
          n=4 and the very synthesis prompts the runner built, n=1): no dependencies at all.

Runs alternate (runner, flat) `--reps` times after a warm-up of each, in one process, and the
ratio of medians is printed last as `overhead_ratio=X` (target <= 1.15). Without --model a
tiny Qwen3 checkpoint is made in a temporary directory.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=64)
    p.add_argument("--tokens", type=int, default=128, help="tokens per trajectory (ignore_eos)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--model", default=None)
    p.add_argument("--max-model-len", type=int, default=4096)
    args = p.parse_args()

    from vllm import LLM, SamplingParams

    from megatron_pacore.inference.vllm_engine import VLLMGenerator
    from megatron_pacore.pacore.prompts import round_messages
    from megatron_pacore.pacore.runner import PaCoReRunner, RunnerConfig
    from megatron_pacore.pacore.schedule import RoundSchedule
    from megatron_pacore.types import Problem, SamplingSettings

    model = args.model
    if model is None:
        from megatron_pacore.testing.tiny import make_tiny_model

        model = str(make_tiny_model(tempfile.mkdtemp(prefix="tiny_"), "qwen3", 0))

    problems = [
        Problem(id=f"b{i}", messages=[{"role": "user", "content": f"Problem {i}: find the sum of {i} and {2 * i}."}],
                problem=f"Problem {i}: find the sum of {i} and {2 * i}.")
        for i in range(args.problems)
    ]
    schedule = RoundSchedule.from_level("low")
    sampling = SamplingSettings(max_tokens=args.tokens, ignore_eos=True)
    engine = VLLMGenerator(model, {"max_model_len": args.max_model_len, "seed": 0})
    llm = LLM(model=model, max_model_len=args.max_model_len, seed=0, enable_prefix_caching=True)

    async def run_runner():
        runner = PaCoReRunner(engine, RunnerConfig(schedule=schedule, sampling=sampling, max_in_flight=1024))
        t = time.perf_counter()
        results = [r async for r in runner.run(problems)]
        return time.perf_counter() - t, results

    def run_flat(results):
        """The same prompts the runner sent, all at once: round 1 with n=4, round 2 with n=1."""
        by_id = {r.id: r for r in results}
        prompts, params = [], []
        for prob in problems:
            res = by_id[prob.id]
            refs = [res.rounds[0].trajectories[i].message for i in res.rounds[1].reference_order]
            for width, chat in ((schedule.widths[0], prob.messages), (1, round_messages(prob.messages, prob.problem, refs))):
                prompts.append({"prompt_token_ids": engine.encode_chat(chat)})
                params.append(SamplingParams(n=width, max_tokens=args.tokens, ignore_eos=True))
        t = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - t
        return seconds, sum(len(o.token_ids) for out in outs for o in out.outputs)

    loop = asyncio.new_event_loop()
    _, warm = loop.run_until_complete(run_runner())  # warm-up of both engines
    run_flat(warm)
    runner_s, flat_s = [], []
    for rep in range(args.reps):
        seconds, results = loop.run_until_complete(run_runner())
        tokens = sum(r.test_time_tokens for r in results)
        assert all(r.status == "ok" for r in results), [r.error for r in results if r.status != "ok"]
        f_seconds, f_tokens = run_flat(results)
        assert f_tokens == tokens, (f_tokens, tokens)  # same samples, same lengths
        runner_s.append(seconds)
        flat_s.append(f_seconds)
        print(f"rep {rep}: runner {seconds:.2f}s flat {f_seconds:.2f}s tokens {tokens} "
              f"({tokens / seconds:.0f} vs {f_tokens / f_seconds:.0f} tok/s)", flush=True)
    loop.run_until_complete(engine.close())
    loop.close()
    ratio = statistics.median(runner_s) / statistics.median(flat_s)
    print(f"problems={args.problems} tokens_per_trajectory={args.tokens} widths={schedule} "
          f"runner_s={statistics.median(runner_s):.2f} flat_s={statistics.median(flat_s):.2f}")
    print(f"overhead_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
