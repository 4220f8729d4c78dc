"""Training metrics: one console line per iteration, metrics.jsonl always, TensorBoard and
Weights & Biases when configured, and reward.png redrawn as the run goes.

Keys are namespaced (`rollout/`, `reward/`, `actor/`, `critic/`, `timing/`, `perf/`); only
rank 0 writes. metrics.jsonl is appended one JSON object per iteration (with `iteration` and
`stage`), so a resumed run continues the same file; the rows of iterations past the resume
point (written after the checkpoint a run resumed from) are dropped first.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("megatron_pacore.train")


@dataclass(kw_only=True)
class LoggingConfig:
    """Where and how a training run reports."""

    dir: str = "outputs/train"
    """Run directory: metrics.jsonl, reward.png, config.yaml (checkpoints default below it)."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the tensorboard package)."""
    wandb_project: Optional[str] = None
    """Also log to this Weights & Biases project (needs wandb and its login)."""
    plot_every: int = 1
    """Redraw reward.png every N iterations (0: only at the end)."""

    def __post_init__(self) -> None:
        if not self.dir:
            raise ValueError("logging.dir is required")
        if self.plot_every < 0:
            raise ValueError(f"logging.plot_every must be >= 0, got {self.plot_every}")


# (label, key, format) of the console line, in order; absent keys are skipped.
_LINE = (
    ("reward", "reward/mean", "{:.3f}"),
    ("acc", "reward/accuracy", "{:.3f}"),
    ("len", "rollout/response_length_mean", "{:.0f}"),
    ("trunc", "rollout/truncated_frac", "{:.2f}"),
    ("xchk", "rollout/cross_check_rate", "{:.2f}"),
    ("ent", "actor/entropy", "{:.3f}"),
    ("is", "actor/is_ratio_mean", "{:.3f}"),
    ("is_max", "actor/is_ratio_max", "{:.2f}"),
    ("capped", "actor/is_capped_frac", "{:.3f}"),
    ("pg", "actor/pg_loss", "{:+.4f}"),
    ("vf", "critic/vf_loss", "{:.4f}"),
)


def format_line(iteration: int, total: int, stage: str, metrics: dict[str, float]) -> str:
    """The console line of one iteration (module doc)."""
    parts = [f"it {iteration}/{total} [{stage}]"]
    for label, key, fmt in _LINE:
        if key in metrics:
            parts.append(f"{label} {fmt.format(metrics[key])}")
    timings = [f"{k.split('/', 1)[1]} {v:.1f}s" for k, v in metrics.items() if k.startswith("timing/") and k != "timing/step"]
    if "timing/step" in metrics:
        timings.append(f"step {metrics['timing/step']:.1f}s")
    parts.append(" ".join(timings))
    if "perf/tokens_per_s" in metrics:
        parts.append(f"{metrics['perf/tokens_per_s']:.0f} tok/s")
    return " | ".join(parts)


class MetricsLogger:
    """Writes one iteration's metrics everywhere configured (rank 0 only)."""

    def __init__(self, cfg: LoggingConfig, total_iterations: int, enabled: bool, config: Optional[dict] = None,
                 resume_iteration: int = 0) -> None:
        self.cfg = cfg
        self.total = total_iterations
        self.enabled = enabled
        self.dir = Path(cfg.dir)
        self.history: list[dict[str, Any]] = []
        self._tb = self._wandb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.history = self._kept_rows(resume_iteration)
        with open(self.path, "w") as f:  # rewrite without the rows past the resume point
            for row in self.history:
                f.write(json.dumps(row) + "\n")
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))
        if cfg.wandb_project:
            import wandb

            self._wandb = wandb.init(project=cfg.wandb_project, dir=str(self.dir), config=config or {},
                                     resume="allow")

    def _kept_rows(self, resume_iteration: int) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a crash
            if int(row.get("iteration", 0)) <= resume_iteration:
                rows.append(row)
        return rows

    def log(self, iteration: int, stage: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"iteration": iteration, "stage": stage, "time": time.time(), **metrics}
        self.history.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(format_line(iteration, self.total, stage, metrics), flush=True)
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, iteration)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(metrics, step=iteration)
        if self.cfg.plot_every and iteration % self.cfg.plot_every == 0:
            self.plot()

    def plot(self) -> Optional[Path]:
        """reward.png: mean reward and accuracy per iteration, stage switches marked."""
        if not self.enabled or not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        its = [r["iteration"] for r in self.history]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(its, [r.get("reward/mean", float("nan")) for r in self.history], label="reward (mean)", marker=".")
        ax.plot(its, [r.get("reward/accuracy", float("nan")) for r in self.history], label="accuracy", alpha=0.7)
        if any("rollout/message_accuracy" in r for r in self.history):
            ax.plot(its, [r.get("rollout/message_accuracy", float("nan")) for r in self.history],
                    label="message accuracy (references)", linestyle="--", alpha=0.7)
        for prev, row in zip(self.history, self.history[1:]):
            if row["stage"] != prev["stage"]:
                ax.axvline(row["iteration"] - 0.5, color="grey", linestyle=":")
                ax.text(row["iteration"], 1.0, row["stage"], fontsize=8, va="top")
        ax.set_xlabel("PPO iteration")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("PaCoRe PPO: synthesis reward")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = self.dir / "reward.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    def close(self) -> None:
        if not self.enabled:
            return
        self.plot()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
