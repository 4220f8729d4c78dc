"""Metrics of an evaluation, per method and compute level.

- accuracy: pass@1 of the method, i.e. its mean correctness over problems, computed per run
  and averaged over runs; `stderr` is the standard error of that mean over runs (sample
  standard deviation / sqrt(runs); None with one run).
- tokens: mean test-time tokens per problem (all completion tokens of every round).
- message accuracy by round (pacore): the share of right messages among the successful
  trajectories of each round; the last round is the final answer.
- emergent correctness: the share of problems (x runs) whose synthesis is right although every
  message in its final prompt was wrong; its converse: every message right, synthesis wrong.
  Both are also given conditioned on their premise.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

from megatron_pacore.eval import methods as m
from megatron_pacore.eval.config import EvalConfig
from megatron_pacore.eval.sampling import EvalData, Instance

SINGLE_LEVEL = "-"


@dataclass(frozen=True)
class MethodMetrics:
    """One row of the report: a method at a compute level."""

    method: str
    level: str  # level name; "-" for `single`, which does not depend on the level
    widths: str  # the rounds, e.g. "16,1"; "1" for single
    accuracy: float
    stderr: Optional[float]
    run_accuracies: list[float]
    tokens: float
    problems: int


def mean_and_stderr(values: list[float]) -> tuple[float, Optional[float]]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, statistics.stdev(values) / math.sqrt(len(values))


def _row(method: str, level: str, widths: str, outcomes: dict[int, list[m.Outcome]]) -> MethodMetrics:
    runs = sorted(outcomes)
    per_run = [sum(o.correct for o in outcomes[r]) / len(outcomes[r]) for r in runs]
    everything = [o for r in runs for o in outcomes[r]]
    accuracy, stderr = mean_and_stderr(per_run)
    return MethodMetrics(method, level, widths, accuracy, stderr, per_run,
                         sum(o.tokens for o in everything) / len(everything), len(outcomes[runs[0]]))


def method_metrics(cfg: EvalConfig, data: EvalData, grades: m.Grades) -> list[MethodMetrics]:
    """One row per requested method and level (one `single` row), in the order of METHODS."""
    rows = []
    levels = cfg.compute_levels()
    for method in cfg.methods:
        if method == "single":
            by_run: dict[int, list[m.Outcome]] = defaultdict(list)
            for s in data.samples:
                by_run[s.run].append(m.single(s, grades))
            rows.append(_row("single", SINGLE_LEVEL, "1", by_run))
            continue
        fn = m.INSTANCE_METHODS[method]
        for level in levels:
            by_run = defaultdict(list)
            for inst in data.instances:
                if inst.level.name == level.name:
                    by_run[inst.run].append(fn(inst, grades))
            widths = str(level.first_width) if method in ("majority", "pass_at_k") else str(level.schedule)
            rows.append(_row(method, level.name, widths, by_run))
    return rows


def _complete(inst: Instance) -> bool:
    """The pacore pipeline reached its final round."""
    r = inst.pacore
    return r is not None and len(r.rounds) == inst.level.schedule.num_rounds


def message_accuracy(data: EvalData, grades: m.Grades) -> dict[str, list[Optional[float]]]:
    """Per level: the share of right messages in each round of the pacore pipelines."""
    right: dict[str, list[float]] = {}
    count: dict[str, list[int]] = {}
    for inst in data.instances:
        if inst.pacore is None:
            continue
        name, rounds = inst.level.name, inst.level.schedule.num_rounds
        right.setdefault(name, [0.0] * rounds)
        count.setdefault(name, [0] * rounds)
        for i, record in enumerate(inst.pacore.rounds):
            for t in record.trajectories:
                if t.ok:
                    right[name][i] += m.verdict_of(grades, inst.problem.id, t.message).score
                    count[name][i] += 1
    return {name: [r / c if c else None for r, c in zip(right[name], count[name])] for name in right}


def _share(numerator: int, denominator: int) -> Optional[float]:
    return numerator / denominator if denominator else None


def emergence(data: EvalData, grades: m.Grades) -> dict[str, dict[str, Optional[float]]]:
    """Per level: emergent correctness and its converse, over the pacore pipelines (a pipeline
    that failed before its final round counts in `instances` as wrong with no inputs)."""
    out = {}
    by_level: dict[str, list[Instance]] = defaultdict(list)
    for inst in data.instances:
        if inst.pacore is not None:
            by_level[inst.level.name].append(inst)
    for name, instances in by_level.items():
        all_wrong = all_right = emergent = lost = 0
        for inst in instances:
            if not _complete(inst):
                continue
            result = inst.pacore
            assert result is not None
            final_right = m.pacore(inst, grades).correct == 1.0
            previous = result.rounds[-2].trajectories
            inputs = [m.verdict_of(grades, inst.problem.id, previous[i].message).score
                      for i in result.rounds[-1].reference_order]
            if inputs and all(s == 0.0 for s in inputs):
                all_wrong += 1
                emergent += final_right
            if inputs and all(s == 1.0 for s in inputs):
                all_right += 1
                lost += not final_right
        n = len(instances)
        out[name] = {
            "instances": n,
            "all_inputs_wrong": all_wrong,
            "right_although_all_inputs_wrong": emergent,
            "emergent_correctness": _share(emergent, n),
            "emergent_given_all_wrong": _share(emergent, all_wrong),
            "all_inputs_right": all_right,
            "wrong_although_all_inputs_right": lost,
            "converse": _share(lost, n),
            "converse_given_all_right": _share(lost, all_right),
        }
    return out
