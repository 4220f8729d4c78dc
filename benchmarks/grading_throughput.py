"""Grading throughput on this machine: math responses per second and code test executions per
second, each with its pool sized to the CPU count.

    python benchmarks/grading_throughput.py [--math N] [--code N] [--workers W]

Math: typical PaCoRe final messages (a few sentences of prose ending in a boxed answer) against
references of the kinds found in AIME/HMMT (integers, fractions, radicals, a two-root list),
half of them right. Code: a short stdin/stdout program, each test its own sandboxed process.
Targets on the 2-core build machine: >= 200 math/s and >= 20 code tests/s. The last line is
`math_per_s=X code_tests_per_s=Y`.
"""
from __future__ import annotations

import argparse
import os
import random
import time

from megatron_pacore.rewards.code import CodeGrader
from megatron_pacore.rewards.math import MathGrader

REFERENCES = ["70", "588", r"\frac{1}{576}", r"\frac{9 \sqrt{23}}{23}", r"1-\frac{2}{\pi}", "8\\sqrt{10}",
              r"\frac{-1+\sqrt{17}}{2}, \frac{-1-\sqrt{17}}{2}", r"2^{25} \cdot 26!", "-984", r"\frac{448}{3}"]
WRONG = ["71", "589", r"\frac{1}{575}", r"\frac{9}{23}", r"1+\frac{2}{\pi}", "8\\sqrt{11}",
         r"\frac{-1+\sqrt{17}}{2}", r"26!", "984", r"\frac{448}{5}"]
PROSE = ("Combining the references, the cases above are exhaustive and the count is consistent with the "
         "small examples we checked by hand. Therefore the final answer is $\\boxed{%s}$.")
SOLUTION = "```python\nimport sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums))\n```"


def math_rate(n: int, workers: int) -> float:
    rng = random.Random(0)
    picks = [rng.randrange(len(REFERENCES)) for _ in range(n)]
    responses = [PROSE % (REFERENCES[i] if k % 2 else WRONG[i]) for k, i in enumerate(picks)]
    references = [REFERENCES[i] for i in picks]
    with MathGrader(workers=workers) as grader:
        grader.grade(responses[:2 * workers], references[:2 * workers])  # start the workers
        start = time.perf_counter()
        scores = grader.scores(responses, references)
        elapsed = time.perf_counter() - start
    assert sum(scores) == n // 2, f"expected {n // 2} correct, got {sum(scores)}"
    return n / elapsed


def code_rate(n: int, workers: int) -> float:
    rng = random.Random(0)
    tests = []
    for _ in range(n):
        nums = [rng.randrange(1000) for _ in range(5)]
        tests.append({"input": " ".join(map(str, nums)) + "\n", "output": f"{sum(nums)}\n"})
    with CodeGrader(workers=workers) as grader:
        start = time.perf_counter()
        result = grader.grade(SOLUTION, tests)
        elapsed = time.perf_counter() - start
    assert result.pass_rate == 1.0, result.verdicts[:5]
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--math", type=int, default=2000, help="math responses to grade")
    parser.add_argument("--code", type=int, default=200, help="code test executions")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    m = math_rate(args.math, args.workers)
    print(f"math: {args.math} responses, {args.workers} workers: {m:.1f}/s")
    c = code_rate(args.code, args.workers)
    print(f"code: {args.code} test executions, {args.workers} sandboxes: {c:.1f}/s")
    print(f"math_per_s={m:.1f} code_tests_per_s={c:.1f}")


if __name__ == "__main__":
    main()
