"""The training reward: each rollout response graded against its problem (phase 3).

    reward_fn = TrainingReward(RewardConfig())
    pending = reward_fn.submit(items)         # grading runs in its process pools...
    ...                                       # ...while the trainer computes log-probs
    results = pending.result()                # one RewardResult per item, in order

Reward (the paper's, binary): math 1 when the strict grader accepts the final answer (the
whole trajectory is given: it must have finished thinking (`</think>`), not have been cut by
the token limit, and the last `\\boxed{}` of its compacted message must equal the reference);
code 1 when every test passes (or the pass rate, `code_reward=pass_rate`), graded on the
compacted message, and 0 for a truncated or unfinished trajectory as for math. A grader error
or timeout gives 0 and is counted under its reason; it never fails the step.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Sequence

from megatron_pacore.pacore.compaction import THINK_END, compact
from megatron_pacore.rewards.code import CodeGraderConfig

CODE_REWARDS = ("binary", "pass_rate")


@dataclass(kw_only=True)
class RewardConfig:
    """How rollout responses are graded."""

    strict: bool = True
    """Math in strict mode (training: whole trajectories, last box only); False = lenient."""
    code_reward: str = "binary"
    """Code: 'binary' (1 only when every test passes, the paper's) or 'pass_rate'."""
    math_workers: Optional[int] = None
    """Math grading processes; None = the CPU count."""
    math_timeout_s: float = 10.0
    """Per-response limit of the math grader (past it: reward 0, reason timeout)."""
    code: CodeGraderConfig = field(default_factory=CodeGraderConfig)
    """The sandboxed code grader (require_isolation on by default)."""

    def __post_init__(self) -> None:
        if self.code_reward not in CODE_REWARDS:
            raise ValueError(f"reward.code_reward must be one of {CODE_REWARDS}, got {self.code_reward!r}")
        if self.math_workers is not None and self.math_workers < 1:
            raise ValueError(f"reward.math_workers must be >= 1 or None, got {self.math_workers}")
        if not self.math_timeout_s > 0:
            raise ValueError(f"reward.math_timeout_s must be > 0, got {self.math_timeout_s}")


@dataclass(frozen=True)
class RewardItem:
    """One response to grade: its text, how generation ended, and its problem's truth."""

    response: str
    finish_reason: Optional[str]
    domain: str
    """'math' or 'code'."""
    reference: Optional[str] = None
    """Math: the reference answer."""
    tests: Optional[Sequence[dict]] = None
    """Code: the tests, in the code grader's format."""


@dataclass(frozen=True)
class RewardResult:
    reward: float
    reason: str
    """correct, wrong, no_answer, truncated, unfinished_thinking, timeout, error: ..."""


class TrainingReward:
    """Grades batches of responses on the math and code graders (started on first use)."""

    def __init__(self, cfg: RewardConfig) -> None:
        self.cfg = cfg
        self._math = None
        self._code = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward")

    def _math_grader(self):
        if self._math is None:
            from megatron_pacore.rewards.math import MathGrader

            self._math = MathGrader(workers=self.cfg.math_workers, timeout_s=self.cfg.math_timeout_s,
                                    strict=self.cfg.strict)
        return self._math

    def _code_grader(self):
        if self._code is None:
            from megatron_pacore.rewards.code import CodeGrader

            self._code = CodeGrader.from_config(self.cfg.code)
        return self._code

    def submit(self, items: Sequence[RewardItem]) -> "Future[list[RewardResult]]":
        """Grade in the background (the graders' own processes do the work)."""
        return self._executor.submit(self.score, list(items))

    def score(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        out: list[Optional[RewardResult]] = [None] * len(items)
        math_idx = [i for i, it in enumerate(items) if it.domain == "math"]
        code_idx = [i for i, it in enumerate(items) if it.domain == "code"]
        bad = [i for i, it in enumerate(items) if it.domain not in ("math", "code")]
        for i in bad:
            out[i] = RewardResult(0.0, f"error: unknown domain {items[i].domain!r}")
        if math_idx:
            try:
                verdicts = self._math_grader().grade([items[i].response for i in math_idx],
                                                     [items[i].reference or "" for i in math_idx],
                                                     [items[i].finish_reason for i in math_idx])
                for i, v in zip(math_idx, verdicts):
                    out[i] = RewardResult(float(v.score), v.reason)
            except Exception as e:  # a broken grader must not end the run: reward 0, counted
                for i in math_idx:
                    out[i] = RewardResult(0.0, f"error: {type(e).__name__}: {e}")
        if code_idx:
            self._score_code(items, code_idx, out)
        return [r if r is not None else RewardResult(0.0, "error: not graded") for r in out]

    def _score_code(self, items, idx: list[int], out: list) -> None:
        gradable = []
        for i in idx:
            it = items[i]
            if self.cfg.strict and it.finish_reason == "length":
                out[i] = RewardResult(0.0, "truncated")
            elif self.cfg.strict and THINK_END not in it.response:
                out[i] = RewardResult(0.0, "unfinished_thinking")
            else:
                gradable.append(i)
        if not gradable:
            return
        try:
            results = self._code_grader().grade_many([(compact(items[i].response), items[i].tests or [])
                                                      for i in gradable])
        except Exception as e:
            for i in gradable:
                out[i] = RewardResult(0.0, f"error: {type(e).__name__}: {e}")
            return
        for i, r in zip(gradable, results):
            if r.error is not None:
                out[i] = RewardResult(0.0, "no_answer")
                continue
            passed_all = r.pass_rate == 1.0
            reward = r.pass_rate if self.cfg.code_reward == "pass_rate" else float(passed_all)
            out[i] = RewardResult(reward, "correct" if passed_all else "wrong")

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        for g in (self._math, self._code):
            if g is not None:
                g.close()
