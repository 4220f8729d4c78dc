"""Math grading: the final answer of a response against a reference, checked by math-verify.

    score_math(response, reference, strict=True, finish_reason=None) -> 1.0 or 0.0
    MathGrader(workers, timeout_s, strict).grade(responses, references, finish_reasons)

Two modes. **Strict** (the default of `score_math`, and what training rewards use: a policy
under RL is paid for exactly what the grader accepts): the response is the whole trajectory;
one that never closed its thinking (no `</think>`) or was cut by the token limit
(`finish_reason == "length"`) scores 0, and in its compacted message (the text after the last
`</think>`) only the last complete `\\boxed{...}` counts. No box, no reward: a trajectory
cut off mid-thought is not graded by whatever number it wrote last, and "the answer is 3,
or maybe 5" earns nothing.

**Lenient** (`strict=False`; for evaluating models that do not box, on compacted messages):
the answer is taken in this order:

1. `boxed`: the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces; boxes that end
   the text one after another ("\\boxed{2} and \\boxed{3}") are joined into a list, so two
   boxed roots compare with a two-root reference. An unterminated last box (a response cut
   by max_tokens) falls back to the previous complete one.
2. `phrase`: the rest of the line after "final answer is", "answer:" or "####", only when
   that phrase is on the last non-empty line (an "answer is" in the middle of the reasoning
   is not the answer).
3. `fallback`: math-verify's own extraction over the last characters of the text.

The reference is wrapped in `$...$` before parsing (a bare `2^{25} \\cdot 26!` misparses
otherwise) and compared with `math_verify.verify`, which accepts equivalent forms
(`\\dfrac{1}{576}` and `1/576`, `\\frac12` and `0.5`, roots in either order) and rejects near
misses (a sign, a root, a factor).

Plain numbers on both sides (integers, decimals, fractions: `math_exact.py`) are compared
exactly without parsing, with math-verify's verdicts; every other pair goes to math-verify,
whose slowest steps `math_speedups.py` makes cheap without changing a result. Each worker
parses a reference once (an LRU cache): a PPO iteration grades many samples per problem.

math-verify's own timeouts use `signal.alarm`, which works only in the main thread, so they are
turned off here and every item runs in a `TimeoutPool` that enforces our own deadline: a
pathological input scores 0.0 with reason `timeout` and the caller never hangs.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from megatron_pacore.pacore.compaction import THINK_END
from megatron_pacore.rewards import math_speedups
from megatron_pacore.rewards.math_exact import compare_exact, exact_value
from megatron_pacore.rewards.pool import TimeoutPool

_BOX_OPENERS = ("\\boxed", "\\fbox")
# Text allowed between two boxes that together form one answer ("\boxed{2}, \boxed{3}").
_BOX_JOINER = re.compile(r"^[\s,;$.]*(?:and|or|\\text\{\s*(?:and|or)\s*\})?[\s,;$]*$")
_PHRASE = re.compile(r"(?:final answer(?: is)?|answer\s*(?:is|:)|####)\s*:?\s*(.+)", re.IGNORECASE)
# Caps that keep a hostile response from costing more than parsing should.
_MAX_ANSWER_CHARS = 2_000
_FALLBACK_TAIL_CHARS = 400


@dataclass(frozen=True)
class MathVerdict:
    """The grade of one response.

    `reason` says how it was decided: "correct", "wrong", "no_answer" (nothing extracted),
    "unparsable" (extracted text math-verify could not read), "timeout", "truncated" and
    "unfinished_thinking" (strict mode: cut by the token limit / no `</think>`), or
    "error: ..." (the grader itself failed, e.g. a reference that does not parse).
    `extracted` is the answer text that was compared, and `method` how it was found (boxed,
    phrase, fallback).
    """

    score: float
    reason: str
    extracted: Optional[str] = None
    method: Optional[str] = None


# -- extraction (pure, runs in the caller or a worker) -------------------------------------


def _box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete \\boxed{...}/\\fbox{...}, in text order.

    Braces are matched by depth, ignoring escaped `\\{` `\\}`; `\\boxed 5` (no brace) takes
    the next token.
    """
    spans = []
    pos = 0
    while True:
        starts = [(text.find(o, pos), o) for o in _BOX_OPENERS]
        starts = [(s, o) for s, o in starts if s >= 0]
        if not starts:
            return spans
        start, opener = min(starts)
        i = start + len(opener)
        if i < len(text) and text[i] == " " and i + 1 < len(text) and text[i + 1] not in "{ ":
            m = re.match(r" ([^\s$]+)", text[i:])
            assert m is not None
            spans.append((start, i + m.end(), m.group(1)))
            pos = i + m.end()
            continue
        while i < len(text) and text[i] == " ":
            i += 1
        if i >= len(text) or text[i] != "{":
            pos = start + len(opener)
            continue
        depth, j = 0, i
        while j < len(text):
            c = text[j]
            if c == "\\":
                j += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if depth != 0 or j >= len(text):  # unterminated: nothing complete after it
            return spans
        spans.append((start, j + 1, text[i + 1 : j]))
        pos = j + 1


def last_boxed(text: str) -> Optional[str]:
    """Content of the last complete box, joined with the boxes just before it when only
    commas, "and"/"or" or `$` separate them; None if there is no complete box."""
    spans = _box_spans(text)
    if not spans:
        return None
    group = [spans[-1]]
    for prev in reversed(spans[:-1]):
        if not _BOX_JOINER.match(text[prev[1] : group[0][0]]):
            break
        group.insert(0, prev)
    return ", ".join(s[2].strip() for s in group)


def _strip_phrase_answer(answer: str) -> str:
    """Drops the markup around a phrase answer: `**`, `$`, `\\(` `\\)`, a final period."""
    previous = None
    while previous != answer:
        previous = answer
        answer = answer.strip().strip("*").rstrip(".").strip("$")
        answer = re.sub(r"^\\[(\[]|\\[)\]]$", "", answer)
    return answer.strip()


def extract_answer(response: str, strict: bool = False) -> tuple[Optional[str], Optional[str]]:
    """(answer text, method) following the module docstring; (None, None) when there is no
    box (strict) or neither a box nor a final-line answer phrase (lenient: the math-verify
    fallback runs later)."""
    if strict:
        spans = _box_spans(response)
        return (spans[-1][2].strip()[:_MAX_ANSWER_CHARS], "boxed") if spans else (None, None)
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed[:_MAX_ANSWER_CHARS], "boxed"
    lines = [line for line in response.splitlines() if line.strip()]
    matches = list(_PHRASE.finditer(lines[-1])) if lines else []
    if matches:
        answer = _strip_phrase_answer(matches[-1].group(1))
        if answer:
            return answer[:_MAX_ANSWER_CHARS], "phrase"
    return None, None


# -- verification (runs in pool workers: no timeouts of math-verify's own) -----------------


WORKER_MEMORY_BYTES = 4 << 30


def _init_worker() -> None:
    """Worker initializer: a memory cap, so that an expression that blows up (sympy expanding
    a huge power) fails with MemoryError in the worker instead of exhausting the host; and
    quiet logs (math-verify warns once that its timeouts are off, which is on purpose)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > WORKER_MEMORY_BYTES:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, hard))
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (before the worker says ready: not on an item's clock)

    math_speedups.install()


@functools.lru_cache(maxsize=4096)
def _parse_reference(reference: str) -> Any:
    from math_verify import parse

    return parse(f"${reference}$", parsing_timeout=None)


def _parse_prediction(answer: str) -> Any:
    from math_verify import parse

    return parse(f"${answer}$", parsing_timeout=None)


def _expand_pm(answer: str) -> str:
    """`a \\pm b` -> `a + b, a - b`: the two roots written as one (only for a single \\pm)."""
    if answer.count("\\pm") != 1 or "," in answer or "\\mp" in answer:
        return answer
    return answer.replace("\\pm", "+") + ", " + answer.replace("\\pm", "-")


def grade_one(response: str, reference: str, strict: bool = False,
              finish_reason: Optional[str] = None) -> MathVerdict:
    """Grades one response in this process, without any timeout: call it through a
    MathGrader (which adds one) unless the inputs are trusted. Strict: `response` is the
    whole trajectory and `finish_reason` the engine's; lenient: `response` is usually the
    compacted message."""
    from math_verify import parse, verify

    math_speedups.install()
    plain_reference = exact_value(reference) is not None
    gold = None if plain_reference else _parse_reference(reference)
    if not plain_reference and not gold:
        return MathVerdict(0.0, f"error: reference {reference!r} does not parse")
    if strict:
        if finish_reason == "length":
            return MathVerdict(0.0, "truncated")
        cut = response.rfind(THINK_END)
        if cut < 0:
            return MathVerdict(0.0, "unfinished_thinking")
        response = response[cut + len(THINK_END):]
    answer, method = extract_answer(response, strict)
    if plain_reference and answer is not None:
        # Plain numbers (every AIME answer) compared exactly, without parsing (math_exact.py).
        ok = compare_exact(answer, reference)
        if ok is not None:
            return MathVerdict(1.0 if ok else 0.0, "correct" if ok else "wrong", answer, method)
    if gold is None:
        gold = _parse_reference(reference)
    if answer is not None:
        pred = _parse_prediction(_expand_pm(answer))
    elif strict:
        return MathVerdict(0.0, "no_answer")
    else:
        tail = response[-_FALLBACK_TAIL_CHARS:]
        pred = parse(tail, parsing_timeout=None) if tail.strip() else []
        if not pred:
            return MathVerdict(0.0, "no_answer")
        answer, method = str(pred[-1]), "fallback"
    if not pred:
        return MathVerdict(0.0, "unparsable", answer, method)
    ok = verify(gold, pred, timeout_seconds=None)
    return MathVerdict(1.0 if ok else 0.0, "correct" if ok else "wrong", answer, method)


# -- the pool ------------------------------------------------------------------------------


class MathGrader:
    """Grades many responses at once on a pool of processes, each item under `timeout_s`.

    Args:
        workers: grading processes (default: the CPU count).
        timeout_s: per-item wall-clock limit; an item past it scores 0.0, reason "timeout".
        strict: the strict mode of the module docstring (whole trajectories, last box only)
            instead of the lenient one (compacted messages, phrases and fallback allowed).
    """

    def __init__(self, workers: Optional[int] = None, timeout_s: float = 10.0, strict: bool = False) -> None:
        self.strict = strict
        self.pool = TimeoutPool(
            f"{__name__}:grade_one",
            workers=workers or os.cpu_count() or 1,
            timeout_s=timeout_s,
            initializer=f"{__name__}:_init_worker",
            preload=["math_verify"],
        )

    @property
    def mode(self) -> str:
        """"strict" or "lenient": what a report says graded it."""
        return "strict" if self.strict else "lenient"

    def grade(self, responses: Sequence[str], references: Sequence[str],
              finish_reasons: Optional[Sequence[Optional[str]]] = None) -> list[MathVerdict]:
        """One verdict per (response, reference) pair, in order; `finish_reasons` (strict
        mode) are the engine's, one per response."""
        if len(responses) != len(references):
            raise ValueError(
                f"responses and references must have the same length, got {len(responses)} and {len(references)}"
            )
        if finish_reasons is None:
            finish_reasons = [None] * len(responses)
        elif len(finish_reasons) != len(responses):
            raise ValueError(f"finish_reasons has {len(finish_reasons)} entries for {len(responses)} responses")
        for i, ref in enumerate(references):
            if not isinstance(ref, str) or not ref.strip():
                raise ValueError(f"reference {i} must be a non-empty string, got {ref!r}")
        items = [(r if isinstance(r, str) else "", ref, self.strict, fr)
                 for r, ref, fr in zip(responses, references, finish_reasons)]
        verdicts = []
        for outcome in self.pool.map(items):
            if outcome.error is None:
                verdicts.append(outcome.value)
            elif outcome.error == "timeout":
                verdicts.append(MathVerdict(0.0, "timeout"))
            else:
                verdicts.append(MathVerdict(0.0, f"error: {outcome.error.splitlines()[0]}"))
        return verdicts

    def scores(self, responses: Sequence[str], references: Sequence[str],
               finish_reasons: Optional[Sequence[Optional[str]]] = None) -> list[float]:
        """Only the 1.0/0.0 scores of `grade`."""
        return [v.score for v in self.grade(responses, references, finish_reasons)]

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "MathGrader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_defaults: dict[bool, MathGrader] = {}
_default_lock = threading.Lock()


def default_grader(strict: bool = True) -> MathGrader:
    """The process-wide grader of a mode behind `score_math`, started on first use, closed at
    exit."""
    with _default_lock:
        if strict not in _defaults:
            _defaults[strict] = MathGrader(strict=strict)
            atexit.register(_defaults[strict].close)
        return _defaults[strict]


def score_math(response: str, reference: str, strict: bool = True, finish_reason: Optional[str] = None) -> float:
    """1.0 if the response's final answer equals the reference, else 0.0 (see module doc).
    Strict by default (training rewards): `response` is the whole trajectory."""
    return default_grader(strict).grade([response], [reference], [finish_reason])[0].score


def score_math_batch(responses: Sequence[str], references: Sequence[str], strict: bool = True,
                     finish_reasons: Optional[Sequence[Optional[str]]] = None) -> list[float]:
    """`score_math` over many pairs, graded in parallel on the default pool of the mode."""
    return default_grader(strict).scores(responses, references, finish_reasons)
