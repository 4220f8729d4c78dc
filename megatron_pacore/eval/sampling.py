"""Generating what every method is measured on, with samples shared across methods.

For each problem and run:

1. First-round samples: max K_1 over the levels, from the problem alone. With `--pool P`, P
   samples per problem are generated once (as in the paper's evaluation) and each run draws
   its samples from that pool without replacement (a seeded permutation per problem and run);
   otherwise each run generates its own. Level L uses the first K_1(L) of them, so `single`,
   `majority` and `pass_at_k` at level L see exactly the samples PaCoRe's first round sees.
2. `pacore` at level L: the runner's multi-round pipeline, whose round-1 request is answered
   with those shared samples (`SharingGenerator`); later rounds are generated.
3. `no_messages` at level L: the same pipeline, sharing rounds 1..R-1 with `pacore`, whose final
   round is sent the problem alone instead of the synthesis prompt: the same compute without
   message passing.

The runner (`megatron_pacore.pacore.runner`) stays the one implementation of the method: the
sharing happens in the Generator it talks to. Everything generated goes through a
`RecordingGenerator`, so a rerun with the same report directory replays it.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

from tqdm import tqdm

from megatron_pacore.eval.config import EvalConfig, Level
from megatron_pacore.inference.base import Generator
from megatron_pacore.pacore.runner import PaCoReRunner, derived_seed, sample_with_retries
from megatron_pacore.types import Chat, Completion, GenerationRequest, Problem, ProblemResult

log = logging.getLogger(__name__)


@dataclass
class Samples:
    """The first-round samples of one problem in one run (max K_1 of them)."""

    problem: Problem
    run: int
    completions: list[Completion]


@dataclass
class Instance:
    """One problem, one run, one level: the K_1 shared samples and the synthesis pipelines."""

    problem: Problem
    run: int
    level: Level
    first: list[Completion]
    pacore: Optional[ProblemResult] = None
    no_messages: Optional[ProblemResult] = None


@dataclass
class EvalData:
    samples: list[Samples] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)


class SharingGenerator:
    """Answers registered requests with completions that already exist (once: a retry of a
    failed shared sample goes to the engine), and sends registered requests a replaced chat.
    Everything else goes to `inner` unchanged."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self._shared: dict[str, list[Completion]] = {}
        self._chats: dict[str, Chat] = {}

    def share(self, request_id: str, completions: Sequence[Completion]) -> None:
        self._shared[request_id] = list(completions)

    def replace_chat(self, request_id: str, messages: Chat) -> None:
        self._chats[request_id] = messages

    async def generate(self, request: GenerationRequest) -> Sequence[Completion]:
        shared = self._shared.pop(request.request_id, None)
        if shared is not None:
            if len(shared) != request.n:
                raise RuntimeError(f"{request.request_id}: {len(shared)} shared samples for n={request.n}")
            return shared
        if request.request_id in self._chats:
            request = replace(request, messages=self._chats.pop(request.request_id))
        return await self.inner.generate(request)

    async def close(self) -> None:
        pass


async def sample_n(generator: Generator, request: GenerationRequest, max_retries: int, backoff_s: float,
                   slots: asyncio.Semaphore) -> list[Completion]:
    """`request.n` completions with the runner's retry policy (only failed samples are asked
    for again); a sample that still fails is kept with its error."""
    return [c for c, _ in await sample_with_retries(generator, request, slots, max_retries, backoff_s)]


class Collector:
    """Runs the generation of one evaluation (see the module docstring).

    Args:
        cfg: the evaluation.
        generator: the engine, already wrapped in a RecordingGenerator for resume.
        tokenize / detokenize: for `max_message_tokens` (the engine's tokenizer).
        retry_backoff_s: first backoff of a retry (tests set 0).
    """

    def __init__(self, cfg: EvalConfig, generator: Generator,
                 tokenize: Optional[Callable[[str], list[int]]] = None,
                 detokenize: Optional[Callable[[list[int]], str]] = None,
                 retry_backoff_s: float = 1.0) -> None:
        self.cfg = cfg
        self.levels = cfg.compute_levels()
        self.generator = generator
        self.sharing = SharingGenerator(generator)
        g = cfg.generation
        self.sampling = g.sampling
        self.seed = g.sampling.seed
        self.max_retries = g.max_retries
        self.backoff_s = retry_backoff_s
        self.width = max(level.first_width for level in self.levels)
        self.runners = {
            level.name: PaCoReRunner(
                self.sharing,
                g.runner_config(level.schedule, retry_backoff_s=retry_backoff_s, order_seed=self.seed or 0),
                tokenize=tokenize, detokenize=detokenize,
            )
            for level in self.levels
        }
        self._slots: Optional[asyncio.Semaphore] = None
        self._pools: dict[str, asyncio.Task] = {}
        self._bar: Optional[tqdm] = None

    def _request(self, problem: Problem, name: str, n: int) -> GenerationRequest:
        request_id = f"{problem.id}/{name}"
        return GenerationRequest(request_id, problem.messages, n, replace(self.sampling, seed=derived_seed(self.seed, request_id)))

    async def _pool(self, problem: Problem) -> list[Completion]:
        assert self.cfg.pool is not None and self._slots is not None
        return await sample_n(self.generator, self._request(problem, "pool", self.cfg.pool),
                              self.max_retries, self.backoff_s, self._slots)

    async def first_round(self, problem: Problem, run: int) -> list[Completion]:
        """The `width` first-round samples of a problem in a run (drawn from the pool, if any)."""
        assert self._slots is not None
        if self.cfg.pool is None:
            return await sample_n(self.generator, self._request(problem, f"run{run}/first", self.width),
                                  self.max_retries, self.backoff_s, self._slots)
        if problem.id not in self._pools:
            self._pools[problem.id] = asyncio.ensure_future(self._pool(problem))
        pool = await self._pools[problem.id]
        draw = random.Random(f"{self.seed}|{problem.id}|{run}").sample(range(len(pool)), self.width)
        return [pool[i] for i in draw]

    async def _pipelines(self, problem: Problem, run: int, level: Level, first: list[Completion]) -> Instance:
        instance = Instance(problem, run, level, first[: level.first_width])
        runner = self.runners[level.name]
        key = f"{problem.id}|run{run}|{level.name}"
        rounds = level.schedule.num_rounds
        if "pacore" in self.cfg.methods:
            self.sharing.share(f"{key}/r1", instance.first)
            instance.pacore = await runner.run_problem(replace(problem, id=key))
            self._tick()
        if "no_messages" in self.cfg.methods:
            nm = f"{key}|no_messages"
            self.sharing.share(f"{nm}/r1", instance.first)
            if instance.pacore is not None:
                for record in instance.pacore.rounds[1 : rounds - 1]:
                    # A Trajectory is a Completion: the recorded round is the engine's answer.
                    self.sharing.share(f"{nm}/r{record.round}", record.trajectories)
            self.sharing.replace_chat(f"{nm}/r{rounds}", problem.messages)
            instance.no_messages = await runner.run_problem(replace(problem, id=nm))
            self._tick()
        return instance

    def _tick(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    async def _problem_run(self, problem: Problem, run: int) -> tuple[Samples, list[Instance]]:
        first = await self.first_round(problem, run)
        instances = await asyncio.gather(*(self._pipelines(problem, run, level, first) for level in self.levels))
        return Samples(problem, run, first), list(instances)

    async def collect(self, problems: Sequence[Problem], progress: bool = True) -> EvalData:
        """Every sample and pipeline of the evaluation, problems and runs in parallel."""
        self._slots = asyncio.Semaphore(self.cfg.generation.concurrency)
        pipelines = len(problems) * self.cfg.runs * len(self.levels) * len(self.cfg.synthesis_methods)
        self._bar = tqdm(total=pipelines, desc="pipelines", unit="pipeline", disable=not progress or not pipelines)
        try:
            done = await asyncio.gather(*(self._problem_run(p, r) for r in range(self.cfg.runs) for p in problems))
        finally:
            self._bar.close()
        data = EvalData()
        for samples, instances in done:
            data.samples.append(samples)
            data.instances.extend(instances)
        return data
