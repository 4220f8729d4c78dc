"""Grading throughput on this machine: math responses per second and code test executions per
second, each with its pool sized to the CPU count.

    python benchmarks/grading_throughput.py [--math N] [--code N] [--workers W] [--seed S]
        [--kinds integer,fraction,...]

Math measures the training reward (strict mode): every item is a distinct, realistic PaCoRe
trajectory (a few thousand characters of reasoning, `</think>`, a short final message ending
in a boxed answer) against its own distinct reference, drawn from the kinds found in
AIME/HMMT (integers, fractions, radicals, expressions in pi, powers and factorials, two-root
lists); about half are right, the right ones written in an equivalent form rather than the
reference verbatim (`\\dfrac` for `\\frac`, roots swapped, a decimal for a terminating fraction),
the wrong ones near misses. No two items share a response or a reference, so neither
math-verify's own LRU caches nor our reference cache can answer for the grader, and each run
starts a fresh grader (cold caches); the warm-up uses items of its own.

Code: one stdin/stdout program on N distinct tests, each its own sandboxed process; the
sandbox's isolation level is printed with the figure.

Targets on the 2-core build machine: >= 200 math/s and >= 20 code tests/s. Wall-clock rates
depend on what else runs (the load average is printed), so the math figure comes with the CPU
time one item costs, graded in this process on items of its own, and the rate W workers would
reach on W otherwise idle cores (`math_cpu_bound_per_s`). The last line is
`math_per_s=X math_cpu_bound_per_s=Z code_tests_per_s=Y isolation=L`.
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import time

from megatron_pacore.rewards.code import CodeGrader
from megatron_pacore.rewards.math import MathGrader, grade_one

SOLUTION = "```python\nimport sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums))\n```"
_STEPS = [
    "First I restate the problem: we need the quantity asked for, and I should be careful with the edge cases.",
    "Let me set up coordinates and write the constraint as an equation in one variable.",
    "Substituting the second relation into the first gives a quadratic; its discriminant must be checked.",
    "Hmm, wait. That sign looks wrong, let me redo the expansion term by term.",
    "Counting the cases by the position of the largest element, each case contributes a product of binomials.",
    "By symmetry the two halves contribute equally, so it is enough to compute one of them and double it.",
    "Let me verify with a small instance by hand: for n = 3 the formula gives the value I enumerated.",
    "Alternatively, a generating function argument gives the same recurrence, which is reassuring.",
    "The telescoping sum collapses to its first and last terms once the partial fractions are written out.",
    "Now simplify: the common factor cancels and the remaining expression is already in lowest terms.",
]


KINDS = ("integer", "fraction", "radical", "pi", "power", "roots")


def _item(rng: random.Random, k: int, kinds: tuple[str, ...] = KINDS) -> tuple[str, str, str, bool]:
    """(kind, reference, answer as written in the response, right?) of the k-th item: k makes
    every reference distinct."""
    right = rng.random() < 0.5
    kind = rng.choice(kinds)
    n = 1000 + k  # distinct per item
    if kind == "integer":
        ref = str(n)
        ans = ref if right else str(n + rng.choice([-1, 1, 10]))
    elif kind == "fraction":
        b = 2 * n + 1
        ref = rf"\frac{{{n}}}{{{b}}}"
        ans = rf"\dfrac{{{n}}}{{{b}}}" if right else rf"\frac{{{n + 1}}}{{{b}}}"
    elif kind == "radical":
        ref = rf"{n}\sqrt{{{2 + k % 5 * 4 + 1}}}"
        ans = rf"{n} \sqrt{{{2 + k % 5 * 4 + 1}}}" if right else rf"{n}\sqrt{{{2 + k % 5 * 4 + 2}}}"
    elif kind == "pi":
        ref = rf"{n} - \frac{{2}}{{\pi}}"
        ans = rf"-\frac{{2}}{{\pi}} + {n}" if right else rf"{n} + \frac{{2}}{{\pi}}"
    elif kind == "power":
        ref = rf"2^{{{n % 50 + 3}}} \cdot {n}"
        ans = rf"{n} \cdot 2^{{{n % 50 + 3}}}" if right else rf"2^{{{n % 50 + 4}}} \cdot {n}"
    else:
        ref = rf"\frac{{-1+\sqrt{{{n}}}}}{{2}}, \frac{{-1-\sqrt{{{n}}}}}{{2}}"
        ans = (rf"\frac{{-1-\sqrt{{{n}}}}}{{2}}, \frac{{-1+\sqrt{{{n}}}}}{{2}}" if right
               else rf"\frac{{-1+\sqrt{{{n}}}}}{{2}}")
    return kind, ref, ans, right


def math_items(n: int, seed: int, offset: int = 0,
               kinds: tuple[str, ...] = KINDS) -> tuple[list[str], list[str], list[tuple[str, bool]]]:
    rng = random.Random(seed)
    responses, references, mix = [], [], []
    for k in range(offset, offset + n):
        kind, ref, ans, right = _item(rng, k, kinds)
        thinking = " ".join(rng.choice(_STEPS) for _ in range(rng.randint(20, 45)))
        message = (f"Working through the cases (item {k}), the count is consistent with the small examples. "
                   f"Therefore the final answer is $\\boxed{{{ans}}}$.")
        responses.append(f"<think>{thinking} So the value should be {ans}.</think>{message}")
        references.append(ref)
        mix.append((kind, right))
    return responses, references, mix


def math_rate(n: int, workers: int, seed: int, kinds: tuple[str, ...] = KINDS) -> tuple[float, dict]:
    responses, references, mix = math_items(n, seed, kinds=kinds)
    assert len(set(responses)) == n and len(set(references)) == n
    warm_r, warm_ref, _ = math_items(2 * workers, seed + 1, offset=10 * n, kinds=kinds)  # its own items
    with MathGrader(workers=workers, strict=True) as grader:  # fresh workers: cold caches
        grader.grade(warm_r, warm_ref)
        start = time.perf_counter()
        verdicts = grader.grade(responses, references)
        elapsed = time.perf_counter() - start
    wrong_grades = [(m, v.reason) for m, v in zip(mix, verdicts) if (v.score == 1.0) != m[1]]
    assert not wrong_grades, f"{len(wrong_grades)} items graded against expectation, e.g. {wrong_grades[:3]}"
    # CPU cost of one item, graded here (distinct items again: no cache hits).
    own_r, own_ref, _ = math_items(min(n, 200), seed + 2, offset=20 * n, kinds=kinds)
    grade_one(warm_r[0], warm_ref[0], strict=True)  # imports math_verify and sympy here, not on the clock
    cpu = time.process_time()
    for response, reference in zip(own_r, own_ref):
        grade_one(response, reference, strict=True)
    cpu_per_item = (time.process_time() - cpu) / len(own_r)
    kinds = collections.Counter(kind for kind, _ in mix)
    info = {"right": sum(r for _, r in mix), "wrong": sum(not r for _, r in mix), "kinds": dict(sorted(kinds.items())),
            "mean_chars": round(sum(map(len, responses)) / n), "mode": grader.mode,
            "cpu_ms_per_item": 1000 * cpu_per_item, "cpu_bound_per_s": workers / cpu_per_item}
    return n / elapsed, info


def code_rate(n: int, workers: int, seed: int) -> tuple[float, str]:
    rng = random.Random(seed)
    tests = []
    for _ in range(n):
        nums = [rng.randrange(1000) for _ in range(5)]
        tests.append({"input": " ".join(map(str, nums)) + "\n", "output": f"{sum(nums)}\n"})
    with CodeGrader(workers=workers, require_isolation=False) as grader:
        grader.grade(SOLUTION, tests[:workers])  # start the sandbox servers
        start = time.perf_counter()
        result = grader.grade(SOLUTION, tests)
        elapsed = time.perf_counter() - start
    assert result.pass_rate == 1.0, result.verdicts[:5]
    return n / elapsed, result.isolation or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--math", type=int, default=2000, help="math responses to grade")
    parser.add_argument("--code", type=int, default=200, help="code test executions")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"answer kinds to draw from (default all: {','.join(KINDS)}); AIME answers are integers")
    args = parser.parse_args()
    kinds = tuple(args.kinds.split(","))
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"--kinds: unknown {unknown}; choose from {KINDS}")
    m, info = math_rate(args.math, args.workers, args.seed, kinds)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"math: {args.math} distinct responses ({info['mode']} mode, mean {info['mean_chars']} chars, "
          f"{info['right']} right / {info['wrong']} wrong, kinds {info['kinds']}), {args.workers} workers: {m:.1f}/s; "
          f"{info['cpu_ms_per_item']:.1f} CPU ms per item -> {info['cpu_bound_per_s']:.0f}/s on {args.workers} idle cores")
    c, level = code_rate(args.code, args.workers, args.seed)
    print(f"code: {args.code} test executions, {args.workers} sandboxes, isolation {level}: {c:.1f}/s")
    print(f"math_per_s={m:.1f} math_cpu_bound_per_s={info['cpu_bound_per_s']:.0f} code_tests_per_s={c:.1f} "
          f"isolation={level}")


if __name__ == "__main__":
    main()
