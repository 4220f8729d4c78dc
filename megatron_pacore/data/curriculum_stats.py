"""What a curriculum file holds: problems per source and domain, and a message-accuracy
histogram (text, and a PNG when an output directory is given).

    build_curriculum.py stats --input FILE [--out DIR] [--bins 24] [--source-field data_source]

The source of a row is its `source_field` column (metadata), else its `data_source` or
`source` column, else "unknown". Message accuracy is the share of correct messages of a graded
pool; rows without per-message correctness are counted as ungraded (`filter --stage 1`
grades them). The histogram has `bins + 1` bars, one per value k/bins (k = 0..bins): each
pool's accuracy is rounded to the nearest one, so with bins equal to the pool size (24, the
paper's) every bar is one exact count of correct messages.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from megatron_pacore.data.train_records import TrainRecord

SOURCE_FIELDS = ("data_source", "source")
PNG_FILE, JSON_FILE = "message_accuracy.png", "stats.json"


@dataclass
class CurriculumStats:
    """Counts of one file (module doc)."""

    problems: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    by_domain: dict[str, int] = field(default_factory=dict)
    by_source_domain: dict[str, dict[str, int]] = field(default_factory=dict)
    bins: int = 24
    histogram: list[int] = field(default_factory=list)
    """Problems per accuracy value k/bins, k = 0..bins."""
    ungraded: int = 0
    mean_message_accuracy: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return {"problems": self.problems, "by_source": self.by_source, "by_domain": self.by_domain,
                "by_source_domain": self.by_source_domain, "bins": self.bins,
                "histogram": {f"{k}/{self.bins}": n for k, n in enumerate(self.histogram)},
                "ungraded": self.ungraded, "mean_message_accuracy": self.mean_message_accuracy}


def source_of(record: TrainRecord, source_field: Optional[str] = None) -> str:
    for key in ((source_field,) if source_field else SOURCE_FIELDS):
        value = record.metadata.get(key)
        if isinstance(value, (str, int)) and str(value):
            return str(value)
    return "unknown"


def compute_stats(records: Sequence[TrainRecord], bins: int = 24, source_field: Optional[str] = None) -> CurriculumStats:
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    stats = CurriculumStats(problems=len(records), bins=bins, histogram=[0] * (bins + 1))
    sources: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    pairs: dict[str, Counter[str]] = {}
    accs = []
    for r in records:
        src = source_of(r, source_field)
        sources[src] += 1
        domains[r.domain] += 1
        pairs.setdefault(src, Counter())[r.domain] += 1
        acc = r.message_accuracy
        if acc is None:
            stats.ungraded += 1
            continue
        accs.append(acc)
        stats.histogram[int(round(acc * bins))] += 1
    stats.by_source = dict(sorted(sources.items()))
    stats.by_domain = dict(sorted(domains.items()))
    stats.by_source_domain = {s: dict(sorted(c.items())) for s, c in sorted(pairs.items())}
    stats.mean_message_accuracy = round(sum(accs) / len(accs), 4) if accs else None
    return stats


def format_stats(stats: CurriculumStats) -> str:
    """The counts and the histogram as text (a bar of '#' per value)."""
    lines = [f"problems: {stats.problems}", "per source and domain:"]
    for src, by_dom in stats.by_source_domain.items():
        doms = ", ".join(f"{d} {n}" for d, n in by_dom.items())
        lines.append(f"  {src}: {stats.by_source[src]} ({doms})")
    lines.append("per domain: " + ", ".join(f"{d} {n}" for d, n in stats.by_domain.items()))
    graded = stats.problems - stats.ungraded
    lines.append(f"message accuracy ({graded} graded, {stats.ungraded} ungraded, mean "
                 f"{stats.mean_message_accuracy}):")
    top = max(stats.histogram) if stats.histogram else 0
    width = len(f"{stats.bins}/{stats.bins}")
    for k, n in enumerate(stats.histogram):
        bar = "#" * (0 if top == 0 else max(1 if n else 0, round(40 * n / top)))
        lines.append(f"  {f'{k}/{stats.bins}':>{width}} {n:6d} {bar}")
    return "\n".join(lines)


def plot_histogram(stats: CurriculumStats, path: Path, title: str = "") -> Path:
    """The histogram as a bar chart PNG (matplotlib, imported here: the CLI stays light)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(stats.bins + 1), stats.histogram, color="#2563EB")
    ax.set_xlabel(f"message accuracy (correct messages out of {stats.bins})")
    ax.set_ylabel("problems")
    ax.set_title(title or f"message accuracy of {stats.problems - stats.ungraded} graded problems")
    step = max(1, stats.bins // 12)
    ax.set_xticks(range(0, stats.bins + 1, step))
    ax.set_xticklabels([f"{k}/{stats.bins}" for k in range(0, stats.bins + 1, step)], rotation=45)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_stats(stats: CurriculumStats, out_dir: str, title: str = "") -> tuple[Path, Path]:
    """DIR/stats.json and DIR/message_accuracy.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(stats.to_dict(), indent=2) + "\n")
    return out / JSON_FILE, plot_histogram(stats, out / PNG_FILE, title)
