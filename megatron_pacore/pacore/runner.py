"""The multi-round PaCoRe runner.

    M_0 = {}
    for r in 1..R:
        Omega_r = K_r trajectories sampled from pi(P(x, M_{r-1}))   # one request, n = K_r
        M_r     = {C(w) for w in Omega_r}                            # compaction
    answer = the single trajectory of round R

Many problems run at once and each advances on its own: a problem's next round starts as
soon as its own round ends, with no barrier across problems, so the engine's batch stays full.
A semaphore bounds the requests in flight. Failed samples are retried with exponential
backoff; one that still fails is kept with its error, never dropped. A round goes on with the
messages that exist; a problem left with none is marked failed with the reason.

A result's `status` says what happened: "ok" (every sample of every round succeeded),
"degraded" (finished, but some samples failed after their retries: `failed_samples` counts
them per round), "failed" (no final response; `error` says why). An exception while running
one problem (in the `on_round` callback, in compaction, ...) fails that problem only.
"""
from __future__ import annotations

import asyncio
import logging
import time
import zlib
from dataclasses import dataclass, replace
from typing import AsyncIterator, Callable, Iterable, Optional

from megatron_pacore.inference.base import Generator
from megatron_pacore.pacore.compaction import compact_bounded
from megatron_pacore.pacore.ordering import reference_order
from megatron_pacore.pacore.prompts import round_messages
from megatron_pacore.pacore.schedule import RoundSchedule
from megatron_pacore.types import (
    Completion,
    GenerationRequest,
    Problem,
    ProblemResult,
    RoundRecord,
    SamplingSettings,
    Trajectory,
)

log = logging.getLogger(__name__)


def derived_seed(base: Optional[int], key: str) -> Optional[int]:
    """A request's seed: `base` moved by crc32(key), so problems and rounds differ while reruns
    agree; None stays None (unseeded)."""
    return None if base is None else (base + zlib.crc32(key.encode("utf-8"))) % (2**31)


async def _generate_once(generator: Generator, request: GenerationRequest, slots: asyncio.Semaphore) -> list[Completion]:
    async with slots:
        try:
            out = list(await generator.generate(request))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the whole request failed: every sample carries the error
            return [Completion(text="", error=f"{type(e).__name__}: {e}") for _ in range(request.n)]
    if len(out) < request.n:
        missing = f"engine returned {len(out)} of {request.n} samples"
        out += [Completion(text="", error=missing) for _ in range(request.n - len(out))]
    return out[: request.n]


async def sample_with_retries(
    generator: Generator,
    request: GenerationRequest,
    slots: asyncio.Semaphore,
    max_retries: int,
    backoff_s: float,
) -> list[tuple[Completion, int]]:
    """`request.n` completions, each with the number of attempts it took.

    Only the failed samples are asked for again (as one request of n = failures), so a partly
    failed round does not regenerate the samples it already has; the wait doubles from
    `backoff_s` (capped at 30 s). A sample that fails every attempt is returned with its error.
    `slots` bounds the requests in flight across all callers.
    """
    done: list[Optional[Completion]] = [None] * request.n
    attempts = [0] * request.n
    pending = list(range(request.n))
    for attempt in range(max_retries + 1):
        sub = replace(request, n=len(pending))
        if attempt and request.sampling.seed is not None:
            # A retry with the same seed would reproduce the same failure mode.
            sub = replace(sub, sampling=replace(sub.sampling, seed=request.sampling.seed + attempt))
        outs = await _generate_once(generator, sub, slots)
        still = []
        for slot, out in zip(pending, outs):
            attempts[slot] += 1
            done[slot] = out
            if not out.ok:
                still.append(slot)
        pending = still
        if not pending:
            break
        if attempt < max_retries:
            delay = min(backoff_s * 2**attempt, 30.0)
            log.warning(
                "%s: %d/%d samples failed (%s); retry %d/%d in %.1fs",
                request.request_id, len(pending), request.n, done[pending[0]].error,
                attempt + 1, max_retries, delay,
            )
            await asyncio.sleep(delay)
    return [(c, a) for c, a in zip(done, attempts)]  # type: ignore[misc]


@dataclass(frozen=True)
class RunnerConfig:
    """How the runner drives the engine (built from config.GenerationOptions by the jobs)."""

    schedule: RoundSchedule
    sampling: SamplingSettings = SamplingSettings()
    # Requests (each of n = K samples) in flight at once, across all problems.
    max_in_flight: int = 64
    # Extra attempts for a failed sample before it is recorded as failed.
    max_retries: int = 3
    # First backoff in seconds; doubles on every retry, capped at 30 s.
    retry_backoff_s: float = 1.0
    # "released" (as the official release) or "random" (seeded per problem and round).
    reference_order: str = "released"
    order_seed: int = 0
    # Bound on a message's tokens (keeps the tail); None as released.
    max_message_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        # The limits of the fields that come from the user (max_in_flight = concurrency,
        # max_retries, reference_order, max_message_tokens) are checked once, where they are
        # configured: config.GenerationOptions.
        if self.retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s must be >= 0, got {self.retry_backoff_s}")


class PaCoReRunner:
    """Runs the PaCoRe pipeline over problems with any Generator.

    Args:
        generator: the engine (VLLMGenerator, OpenAIGenerator, or a scripted one in tests).
        config: schedule, sampling and retry policy.
        tokenize / detokenize: only for `max_message_tokens` (exact token bound).
        on_round: optional callback(problem_id, RoundRecord) after each round, e.g. for
            progress bars or streaming per-trajectory results to disk.
    """

    def __init__(
        self,
        generator: Generator,
        config: RunnerConfig,
        tokenize: Optional[Callable[[str], list[int]]] = None,
        detokenize: Optional[Callable[[list[int]], str]] = None,
        on_round: Optional[Callable[[str, RoundRecord], None]] = None,
    ) -> None:
        self.generator = generator
        self.config = config
        self._tokenize = tokenize
        self._detokenize = detokenize
        self._on_round = on_round
        self._slots: Optional[asyncio.Semaphore] = None

    # -- one problem ---------------------------------------------------------------------

    def _trajectory(self, completion: Completion, attempts: int) -> Trajectory:
        if not completion.ok:
            return Trajectory.of(completion, message="", attempts=attempts)
        c = compact_bounded(completion.text, self.config.max_message_tokens, self._tokenize, self._detokenize)
        return Trajectory.of(completion, message=c.message, attempts=attempts, message_truncated_chars=c.truncated_chars)

    async def sample(self, request: GenerationRequest) -> list[tuple[Completion, int]]:
        """`sample_with_retries` under this runner's retry policy and in-flight bound."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_in_flight)
        return await sample_with_retries(
            self.generator, request, self._slots, self.config.max_retries, self.config.retry_backoff_s)

    async def run_problem(self, problem: Problem) -> ProblemResult:
        """All rounds of one problem."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_in_flight)
        start = time.perf_counter()
        rounds: list[RoundRecord] = []
        references: Optional[list[str]] = None
        order: list[int] = []
        for r, width in enumerate(self.config.schedule.widths, start=1):
            messages = round_messages(problem.messages, problem.problem, references)
            sampling = replace(self.config.sampling, seed=derived_seed(self.config.sampling.seed, f"{problem.id}/{r}"))
            request = GenerationRequest(f"{problem.id}/r{r}", messages, width, sampling)
            samples = await self.sample(request)
            trajectories = [self._trajectory(c, a) for c, a in samples]
            record = RoundRecord(
                round=r, width=width, trajectories=trajectories, reference_order=order,
                prompt_tokens=max((t.prompt_tokens for t in trajectories), default=0),
            )
            rounds.append(record)
            if self._on_round is not None:
                try:
                    self._on_round(problem.id, record)
                except Exception as e:
                    return ProblemResult(
                        id=problem.id, rounds=rounds, final_response=None, final_message=None,
                        seconds=time.perf_counter() - start, status="failed",
                        error=f"round {r}: on_round callback raised {type(e).__name__}: {e}",
                        answer=problem.answer,
                    )

            # Messages of this round, for the next. Failed samples and empty messages carry
            # nothing to synthesise; as in the release, all K are ordered first and those are
            # dropped after (ordering.py). The final round only needs a trajectory that did
            # not fail.
            final_round = r == self.config.schedule.num_rounds
            keep = [t.ok and bool(t.message or final_round) for t in trajectories]
            if not any(keep):
                errors = sorted({t.error for t in trajectories if t.error})
                why = (
                    f"round {r}: all {width} trajectories failed ({'; '.join(errors)})"
                    if all(not t.ok for t in trajectories)
                    else f"round {r}: no trajectory produced a non-empty message"
                )
                return ProblemResult(
                    id=problem.id, rounds=rounds, final_response=None, final_message=None,
                    seconds=time.perf_counter() - start, status="failed", error=why,
                    answer=problem.answer,
                )
            if final_round:
                break
            order = reference_order([t.text for t in trajectories], self.config.reference_order,
                                    self.config.order_seed, f"{problem.id}/{r}", keep=keep)
            references = [trajectories[i].message for i in order]

        final = next(t for t in rounds[-1].trajectories if t.ok)
        degraded = any(not t.ok for record in rounds for t in record.trajectories)
        return ProblemResult(
            id=problem.id, rounds=rounds, final_response=final.text, final_message=final.message,
            seconds=time.perf_counter() - start, answer=problem.answer,
            status="degraded" if degraded else "ok",
        )

    async def _run_problem_safely(self, problem: Problem) -> ProblemResult:
        """`run_problem`, with any exception turned into that problem's failed result."""
        start = time.perf_counter()
        try:
            return await self.run_problem(problem)
        except Exception as e:
            log.exception("%s: the run raised", problem.id)
            return ProblemResult(
                id=problem.id, rounds=[], final_response=None, final_message=None,
                seconds=time.perf_counter() - start, status="failed",
                error=f"{type(e).__name__}: {e}", answer=problem.answer,
            )

    # -- many problems -------------------------------------------------------------------

    async def run(self, problems: Iterable[Problem]) -> AsyncIterator[ProblemResult]:
        """Yields each problem's result as soon as it finishes (not in input order)."""
        self._slots = asyncio.Semaphore(self.config.max_in_flight)
        tasks = [asyncio.create_task(self._run_problem_safely(p)) for p in problems]
        try:
            for done in asyncio.as_completed(tasks):
                yield await done
        finally:
            for t in tasks:
                t.cancel()
