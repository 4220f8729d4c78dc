"""The methods compared by `pacore eval`, each scored on one problem of one run:

- `single`: one sample, its pass@1 estimated by the mean correctness of all first-round
  samples of the run (level-independent); tokens: the mean tokens of one sample.
- `majority`: self-consistency over the K_1 first-round samples of the level; tokens: theirs.
- `pass_at_k`: right if any of those K_1 samples is right (the oracle upper bound).
- `pacore`: the final message of the multi-round pipeline; tokens: all rounds.
- `no_messages`: the same pipeline whose final round sees only the problem; tokens: all rounds.

Every message is graded once (`grade_all`), by its compacted text (math: its final answer;
code: its last ```python block run on the problem's tests, right when all pass); a failed
sample or a failed pipeline counts as wrong.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from megatron_pacore.eval.grading import CodeVerdict, EvalGraders, Verdict
from megatron_pacore.eval.sampling import EvalData, Instance, Samples
from megatron_pacore.pacore.compaction import compact
from megatron_pacore.rewards.math import MathVerdict
from megatron_pacore.types import Completion, Problem, ProblemResult

Grades = dict[tuple[str, str], Verdict]
"""(problem id, message) -> verdict."""
_NO_ANSWER = MathVerdict(0.0, "no_answer")


@dataclass(frozen=True)
class Outcome:
    """One method on one problem of one run: `correct` in [0, 1] (majority ties give a
    fraction), `tokens` the test-time tokens the method spent on it."""

    correct: float
    tokens: float


def sample_message(c: Completion) -> Optional[str]:
    """The compacted message of a first-round sample; None for a failed sample."""
    return compact(c.text) if c.ok else None


def _result_messages(result: Optional[ProblemResult]) -> Iterable[str]:
    if result is None:
        return
    for record in result.rounds:
        for t in record.trajectories:
            if t.ok:
                yield t.message


def grade_all(data: EvalData, graders: EvalGraders) -> Grades:
    """Grades every distinct (problem, message) that any method needs, in one batch."""
    wanted: dict[tuple[str, str], Problem] = {}
    for s in data.samples:
        for c in s.completions:
            m = sample_message(c)
            if m is not None:
                wanted[(s.problem.id, m)] = s.problem
    for inst in data.instances:
        for m in (*_result_messages(inst.pacore), *_result_messages(inst.no_messages)):
            wanted[(inst.problem.id, m)] = inst.problem
    keys = list(wanted)
    verdicts = graders.grade([(wanted[k], k[1]) for k in keys])
    return dict(zip(keys, verdicts))


def verdict_of(grades: Grades, problem_id: str, message: Optional[str]) -> Verdict:
    return _NO_ANSWER if message is None else grades.get((problem_id, message), _NO_ANSWER)


def normalize_answer(answer: str) -> str:
    """A canonical spelling of an extracted answer, for counting votes of wrong answers
    (right answers are merged by the verifier itself)."""
    a = re.sub(r"\\[dt]frac", r"\\frac", answer)
    a = re.sub(r"\\left|\\right|\\!|\\,|\\;|\s+", "", a)
    return a.rstrip(".")


def vote_key(v: Verdict) -> Optional[str]:
    """The group a sample votes for in `majority_vote`; None: it does not vote.

    Math: every answer equal to the reference is one group (the verifier proves them equal);
    a wrong answer votes for its normalized spelling; no extracted answer, no vote.
    Code: a program votes for its normal form (`grading.normalize_program`: the AST without
    comments, layout or docstrings), so only the same program, spelled differently, pools
    votes. This is what self-consistency can do without the hidden tests: grouping programs by
    their test verdicts would let the tests choose the answer (pass@k's oracle), and running
    them on other inputs needs inputs the benchmark does not have. Distinct programs each get
    one vote, so on a problem where every sample differs, majority is the mean correctness of
    the samples (a uniformly random pick). No complete ```python block, no vote.
    """
    if isinstance(v, CodeVerdict):
        return None if v.program is None else "code:" + v.program
    if v.score == 1.0:
        return "right"
    return "wrong:" + normalize_answer(v.extracted) if v.extracted else None


def majority_vote(verdicts: Sequence[Verdict]) -> float:
    """Self-consistency: the group (`vote_key`) with the most votes wins, and its correctness
    is the method's. A group's correctness is the mean score of its samples (for math 1 or 0;
    for code its members are one program, so they agree unless a test's time limit was met by
    one run and not another). A tie is broken uniformly at random, in expectation: the result
    is the mean correctness of the tied groups (1/2 for a right-wrong tie)."""
    votes: Counter[str] = Counter()
    scores: dict[str, float] = {}
    for v in verdicts:
        key = vote_key(v)
        if key is not None:
            votes[key] += 1
            scores[key] = scores.get(key, 0.0) + v.score
    if not votes:
        return 0.0
    top = max(votes.values())
    winners = [key for key, n in votes.items() if n == top]
    return sum(scores[key] / votes[key] for key in winners) / len(winners)


def single(samples: Samples, grades: Grades) -> Outcome:
    scores = [verdict_of(grades, samples.problem.id, sample_message(c)).score for c in samples.completions]
    tokens = [c.completion_tokens for c in samples.completions]
    return Outcome(sum(scores) / len(scores), sum(tokens) / len(tokens))


def first_round_verdicts(inst: Instance, grades: Grades) -> list[Verdict]:
    return [verdict_of(grades, inst.problem.id, sample_message(c)) for c in inst.first]


def majority(inst: Instance, grades: Grades) -> Outcome:
    return Outcome(majority_vote(first_round_verdicts(inst, grades)), sum(c.completion_tokens for c in inst.first))


def pass_at_k(inst: Instance, grades: Grades) -> Outcome:
    right = any(v.score == 1.0 for v in first_round_verdicts(inst, grades))
    return Outcome(1.0 if right else 0.0, sum(c.completion_tokens for c in inst.first))


def final_outcome(result: Optional[ProblemResult], problem_id: str, grades: Grades) -> Outcome:
    """Outcome of a pipeline: its final message graded; a failed pipeline is wrong."""
    if result is None:
        raise ValueError(f"{problem_id}: pipeline result missing")
    message = result.final_message if result.status != "failed" else None
    return Outcome(verdict_of(grades, problem_id, message).score, result.test_time_tokens)


def pacore(inst: Instance, grades: Grades) -> Outcome:
    return final_outcome(inst.pacore, inst.problem.id, grades)


def no_messages(inst: Instance, grades: Grades) -> Outcome:
    return final_outcome(inst.no_messages, inst.problem.id, grades)


INSTANCE_METHODS = {"majority": majority, "pass_at_k": pass_at_k, "pacore": pacore, "no_messages": no_messages}
