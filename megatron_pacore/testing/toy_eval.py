"""How often a policy is right on toy problems, through the real inference path.

    scores = await toy_accuracy(generator, problems, width=8, seed=0)
    scores.single     share of right round-1 messages (one sample each, plain problem)
    scores.synthesis  share of right final answers of the round over its own width messages

Runs the PaCoRe runner with widths [width, 1] at temperature 1.0 (exactly `pacore infer
--widths W`) and grades every compacted message with the math grader, so the figures are the
ones `pacore infer` and the trainer's reward would see.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from megatron_pacore.inference.base import Generator
from megatron_pacore.pacore.runner import PaCoReRunner, RunnerConfig
from megatron_pacore.pacore.schedule import RoundSchedule
from megatron_pacore.types import Problem, SamplingSettings


@dataclass(frozen=True)
class ToyScores:
    """Accuracies over `problems` problems: `single` over problems x width round-1 messages,
    `synthesis` over the problems' final answers (a failed pipeline counts as wrong)."""

    problems: int
    single: float
    synthesis: float
    completion_tokens: int


async def toy_accuracy(generator: Generator, problems: Sequence[Problem], width: int = 8,
                       seed: Optional[int] = 0, max_tokens: int = 40, grader=None) -> ToyScores:
    """Score `generator` on `problems` (rows with answers); `grader` a MathGrader (default:
    a 2-worker one, closed at the end)."""
    from megatron_pacore.rewards.math import MathGrader

    runner = PaCoReRunner(generator, RunnerConfig(
        schedule=RoundSchedule.from_widths([width]),
        sampling=SamplingSettings(max_tokens=max_tokens, temperature=1.0, seed=seed),
        max_retries=1, retry_backoff_s=0.0,
    ))
    results = [r async for r in runner.run(problems)]
    answers = {p.id: p.answer for p in problems}
    singles, finals = [], []
    for r in results:
        singles += [(t.message if t.ok else "", answers[r.id]) for t in r.rounds[0].trajectories]
        finals.append((r.final_message or "", answers[r.id]))
    owned = grader is None
    grader = grader or MathGrader(workers=2)
    try:
        scores = grader.scores([m for m, _ in singles + finals], [a for _, a in singles + finals])
    finally:
        if owned:
            grader.close()
    single, final = scores[: len(singles)], scores[len(singles):]
    return ToyScores(
        problems=len(results), single=sum(single) / max(len(single), 1), synthesis=sum(final) / max(len(final), 1),
        completion_tokens=sum(r.test_time_tokens for r in results),
    )
