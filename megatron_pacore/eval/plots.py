"""The report's figures (PNG, matplotlib's Agg backend: no display needed).

- accuracy vs test-time tokens, log x: one line per method through its compute levels, with
  standard-error bars; this is the scaling picture of the paper (self-consistency saturates,
  PaCoRe keeps climbing).
- message accuracy by round: one line per compute level, round 1 to the final answer.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from matplotlib.ticker import FuncFormatter  # noqa: E402

from megatron_pacore.eval.metrics import MethodMetrics  # noqa: E402

_STYLE = {
    "pacore": ("tab:red", "o"),
    "majority": ("tab:blue", "s"),
    "pass_at_k": ("tab:gray", "^"),
    "no_messages": ("tab:orange", "D"),
    "single": ("black", "*"),
}
_LABEL = {"pacore": "PaCoRe", "majority": "majority vote", "pass_at_k": "pass@k (oracle)",
          "no_messages": "no messages (ablation)", "single": "single sample"}


def _tokens(x: float, _pos: object = None) -> str:
    return f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"


def _minor_tokens(x: float, _pos: object = None) -> str:
    """Labels 2x and 5x a power of ten too: runs often span less than a decade."""
    if x <= 0:
        return ""
    lead = round(x / 10 ** math.floor(math.log10(x)))
    return _tokens(x) if lead in (2, 5) else ""


def accuracy_vs_tokens(rows: Sequence[MethodMetrics], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for index, method in enumerate(dict.fromkeys(r.method for r in rows)):
        # Levels with the same first width give majority vote and pass@k the same point: one
        # marker, labelled with every level it stands for.
        merged: dict[tuple[float, float], list[MethodMetrics]] = {}
        for r in rows:
            if r.method == method:
                merged.setdefault((r.tokens, r.accuracy), []).append(r)
        points = sorted(merged.values(), key=lambda group: group[0].tokens)
        color, marker = _STYLE.get(method, ("tab:green", "x"))
        xs = [max(group[0].tokens, 1.0) for group in points]
        ys = [100 * group[0].accuracy for group in points]
        errs = [100 * group[0].stderr if group[0].stderr is not None else 0.0 for group in points]
        ax.errorbar(xs, ys, yerr=errs, color=color, marker=marker, markersize=7 if method != "single" else 12,
                    linestyle="-" if len(points) > 1 else "none", capsize=3, label=_LABEL.get(method, method),
                    zorder=5 if method == "pacore" else 3)
        for x, y, group in zip(xs, ys, points):
            label = " / ".join(r.level for r in group if r.level != "-")
            if label:  # stacked per method, so labels of coinciding points stay legible
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4 + 9 * index), fontsize=8,
                            color=color)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_tokens))
    ax.xaxis.set_minor_formatter(FuncFormatter(_minor_tokens))
    ax.set_xlabel("mean test-time tokens per problem (log scale)")
    ax.set_ylabel("accuracy, pass@1 (%)")
    ax.set_title(title)
    ax.set_ylim(-2, 102)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def message_accuracy_by_round(by_level: dict[str, list[Optional[float]]], widths: dict[str, str],
                              path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    longest = 1
    for name, values in by_level.items():
        rounds = [i + 1 for i, v in enumerate(values) if v is not None]
        ys = [100 * v for v in values if v is not None]
        longest = max(longest, len(values))
        ax.plot(rounds, ys, marker="o", label=f"{name} [{widths.get(name, '')}]")
        for x, y in zip(rounds, ys):
            ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xticks(range(1, longest + 1))
    ax.set_xlabel("round (the last is the final answer)")
    ax.set_ylabel("messages right (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if by_level:
        ax.legend(loc="best", fontsize=9, title="compute level")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
