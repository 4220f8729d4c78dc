"""The report directory of `pacore eval`:

    report.md                 the table (accuracy, tokens in parentheses; a row per method and
                              level), message accuracy by round, emergent correctness, plots
    metrics.json              every number of report.md, and the settings
    results.jsonl             per problem, run and level: graded samples and pipelines
    accuracy_vs_tokens.png    accuracy against test-time tokens (log x), per method
    message_accuracy.png      message accuracy by round, per level
    generations.jsonl         every generation, as it finished (resume; see store.py)
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from megatron_pacore.eval import methods as m
from megatron_pacore.eval import plots
from megatron_pacore.eval.config import EvalConfig
from megatron_pacore.eval.grading import CodeVerdict
from megatron_pacore.eval.metrics import MethodMetrics, emergence, message_accuracy, method_metrics
from megatron_pacore.eval.sampling import EvalData

_NAMES = {"pacore": "PaCoRe", "single": "Single sample", "majority": "Majority vote",
          "pass_at_k": "Pass@k (oracle)", "no_messages": "No messages (ablation)"}


def _tokens(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _cell(row: MethodMetrics) -> str:
    se = "" if row.stderr is None else f" ± {100 * row.stderr:.1f}"
    return f"{100 * row.accuracy:.1f}{se} ({_tokens(row.tokens)})"


def _grading_lines(grading: dict[str, str]) -> list[str]:
    lines = []
    if "math" in grading:
        lines.append(f"- grading: math {grading['math']} (rewards.math: strict grades only the last box of a "
                     "finished trajectory, lenient also final-line answer phrases and the last number)")
    if "code" in grading:
        lines.append(f"- grading: code in the {grading['code']} sandbox (rewards.code: the last ```python block of "
                     "the final message runs on every test; right when all pass)")
    return lines


def _verdict_fields(v: m.Verdict) -> dict[str, Any]:
    """What results.jsonl records of one graded message (code: also each test's verdict)."""
    out: dict[str, Any] = {"extracted": v.extracted, "score": v.score, "reason": v.reason}
    if isinstance(v, CodeVerdict):
        out.update(pass_rate=v.pass_rate, verdicts=list(v.verdicts))
    return out


def compute_metrics(cfg: EvalConfig, data: EvalData, grades: m.Grades, extra: Optional[dict] = None) -> dict[str, Any]:
    """Everything report.md shows, as one JSON-able dict."""
    levels = cfg.compute_levels()
    return {
        "settings": {**cfg.generation_settings(), "runs": cfg.runs, "methods": cfg.methods,
                     "levels": {lvl.name: list(lvl.schedule.widths) for lvl in levels}},
        "problems": len({s.problem.id for s in data.samples}),
        "methods": [asdict(r) for r in method_metrics(cfg, data, grades)],
        "message_accuracy": message_accuracy(data, grades),
        "emergence": emergence(data, grades),
        **(extra or {}),
    }


def render_markdown(cfg: EvalConfig, metrics: dict[str, Any], figures: dict[str, str]) -> str:
    rows = [MethodMetrics(**r) for r in metrics["methods"]]
    widths = {name: ",".join(map(str, w)) for name, w in metrics["settings"]["levels"].items()}
    runs = cfg.runs
    s = cfg.generation.sampling
    lines = [
        f"# PaCoRe evaluation on `{Path(cfg.benchmark).name}`",
        "",
        f"- model: `{cfg.generation.model}`",
        f"- benchmark: `{cfg.benchmark}` ({metrics['problems']} problems)",
        f"- runs: {runs}; first-round samples: "
        + (f"drawn from a pool of {cfg.pool} per problem" if cfg.pool else "generated per run"),
        f"- sampling: temperature {s.temperature}, top-p {s.top_p}, max tokens {s.max_tokens or 'model limit'}",
        *_grading_lines(metrics.get("grading") or {}),
        "",
        "## Accuracy",
        "",
        "Pass@1 in %, mean over runs" + (" ± standard error" if runs > 1 else "")
        + "; mean test-time tokens per problem in parentheses (all rounds). Single, majority vote and pass@k "
        "use the very samples of PaCoRe's first round at the same level.",
        "",
        "| Method | Level | Rounds | Accuracy % (tokens) |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {_NAMES.get(r.method, r.method)} | {r.level} | {r.widths} | {_cell(r)} |")
    if metrics["message_accuracy"]:
        longest = max(len(v) for v in metrics["message_accuracy"].values())
        lines += ["", "## Message accuracy by round (PaCoRe)", "",
                  "Share of right messages among each round's trajectories, in %; the last round is the answer.", "",
                  "| Level | Rounds | " + " | ".join(f"Round {i + 1}" for i in range(longest)) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in range(longest)) + " |"]
        for name, values in metrics["message_accuracy"].items():
            cells = [_pct(v) for v in values] + [""] * (longest - len(values))
            lines.append(f"| {name} | {widths.get(name, '')} | " + " | ".join(cells) + " |")
    if metrics["emergence"]:
        lines += ["", "## Emergent correctness (PaCoRe)", "",
                  "Right although every message of the final prompt was wrong, and its converse (every message "
                  "right, synthesis wrong): share of all problems x runs, and of those with that premise.", "",
                  "| Level | Problems x runs | Emergent % | of all-wrong inputs | Converse % | of all-right inputs |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, e in metrics["emergence"].items():
            lines.append(
                f"| {name} | {e['instances']} | {_pct(e['emergent_correctness'])} "
                f"| {e['right_although_all_inputs_wrong']}/{e['all_inputs_wrong']} | {_pct(e['converse'])} "
                f"| {e['wrong_although_all_inputs_right']}/{e['all_inputs_right']} |")
    lines += ["", "## Plots", ""]
    lines += [f"![{title}]({name})" for name, title in figures.items()]
    gen = metrics.get("generation")
    if gen:
        lines += ["", f"Generation: {gen['generated']} requests generated in this session, "
                      f"{gen['replayed']} replayed from `generations.jsonl`."]
    return "\n".join(lines) + "\n"


def _results_rows(data: EvalData, grades: m.Grades):
    for inst in data.instances:
        firsts = [m.verdict_of(grades, inst.problem.id, m.sample_message(c)) for c in inst.first]
        row: dict[str, Any] = {
            "problem": inst.problem.id, "run": inst.run, "level": inst.level.name, "answer": inst.problem.answer,
            "first_round": [{"tokens": c.completion_tokens, "finish_reason": c.finish_reason, "error": c.error,
                             **_verdict_fields(v)} for c, v in zip(inst.first, firsts)],
        }
        for method in ("pacore", "no_messages"):
            result = getattr(inst, method)
            if result is not None:
                out = m.final_outcome(result, inst.problem.id, grades)
                message = result.final_message if result.status != "failed" else None
                final = m.verdict_of(grades, inst.problem.id, message)
                row[method] = {**_verdict_fields(final), "score": out.correct, "tokens": result.test_time_tokens,
                               "status": result.status, "error": result.error, "final_message": result.final_message,
                               "round_widths": [r.width for r in result.rounds]}
        yield row


def write_report(cfg: EvalConfig, data: EvalData, grades: m.Grades, extra: Optional[dict] = None) -> dict[str, Any]:
    """Writes every file of the report directory but generations.jsonl; returns the metrics."""
    out = Path(cfg.report)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(cfg, data, grades, extra)
    rows = [MethodMetrics(**r) for r in metrics["methods"]]
    title = Path(cfg.benchmark).stem
    figures = {}
    plots.accuracy_vs_tokens(rows, out / "accuracy_vs_tokens.png", f"{title}: accuracy vs test-time compute")
    figures["accuracy_vs_tokens.png"] = "accuracy vs test-time tokens"
    if metrics["message_accuracy"]:
        widths = {name: ",".join(map(str, w)) for name, w in metrics["settings"]["levels"].items()}
        plots.message_accuracy_by_round(metrics["message_accuracy"], widths, out / "message_accuracy.png",
                                        f"{title}: PaCoRe message accuracy by round")
        figures["message_accuracy.png"] = "message accuracy by round"
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    with (out / "results.jsonl").open("w", encoding="utf-8") as f:
        for row in _results_rows(data, grades):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(render_markdown(cfg, metrics, figures), encoding="utf-8")
    return metrics
