"""Trainer checkpoints: everything a resumed run needs to continue exactly.

    <checkpoint.dir>/iter_0000004/
        actor/    Megatron dist checkpoint of the actor (checkpoint.dist.save_model; the
                  converter exports it to Hugging Face: tools/convert_hf.py --to-hf)
        critic/   the same for the critic
        rank_00000.pt ...  per rank: actor and critic optimizer + schedule states, RNG
                  states (Python, NumPy, torch CPU, CUDA)
        trainer.json       iteration, stage, sampler states, the rollout seed
    <checkpoint.dir>/latest          the name of the newest complete checkpoint

A checkpoint is written into `iter_N.tmp/` and renamed to `iter_N/` by rank 0 only after
every rank has finished (a crash mid-save leaves a .tmp that is ignored and removed on the
next save); `latest` is replaced atomically after the rename; only the newest `keep_last`
are kept.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

LATEST = "latest"
TRAINER = "trainer.json"


@dataclass(kw_only=True)
class CheckpointConfig:
    """When and where trainer checkpoints are written."""

    dir: str = ""
    """Checkpoint directory; empty = <logging.dir>/checkpoints."""
    save_every: int = 50
    """Save every N iterations (and after the last); 0 = only after the last."""
    keep_last: int = 2
    """Keep the newest K checkpoints."""
    export_hf: bool = False
    """Also export the final actor to Hugging Face format (<dir>/hf_final)."""

    def __post_init__(self) -> None:
        if self.save_every < 0:
            raise ValueError(f"checkpoint.save_every must be >= 0, got {self.save_every}")
        if self.keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {self.keep_last}")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def iteration_dir(root: Path, iteration: int) -> Path:
    return root / f"iter_{iteration:07d}"


def latest_checkpoint(root: str | Path) -> Optional[Path]:
    """The newest complete checkpoint under root, or None."""
    root = Path(root)
    marker = root / LATEST
    if not marker.exists():
        return None
    path = root / marker.read_text().strip()
    if not (path / TRAINER).exists():
        raise ValueError(f"{marker} names {path}, which is not a complete trainer checkpoint")
    return path


def save_trainer_checkpoint(root: str | Path, iteration: int, trainer_state: dict[str, Any],
                            rank_state: dict[str, Any], save_models, keep_last: int) -> Path:
    """Write one checkpoint (module doc); every rank calls.

    Args:
        trainer_state: JSON-serialisable state, the same on every rank (rank 0 writes it).
        rank_state: this rank's state (optimizers, RNG), torch-saved per rank.
        save_models: callable(dir) saving the actor and critic into dir/actor, dir/critic
            (collective: every rank calls it).
    """
    root = Path(root)
    final = iteration_dir(root, iteration)
    tmp = final.with_name(final.name + ".tmp")
    rank = dist.get_rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    dist.barrier()
    save_models(tmp)
    torch.save(rank_state, tmp / f"rank_{rank:05d}.pt")
    dist.barrier()
    if rank == 0:
        (tmp / TRAINER).write_text(json.dumps(trainer_state, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        marker_tmp = root / (LATEST + ".tmp")
        marker_tmp.write_text(final.name)
        os.replace(marker_tmp, root / LATEST)
        _prune(root, keep_last)
    dist.barrier()
    return final


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob("iter_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("iter_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def load_trainer_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer_state, this rank's state) of a checkpoint written by save_trainer_checkpoint."""
    path = Path(path)
    rank = dist.get_rank()
    rank_file = path / f"rank_{rank:05d}.pt"
    if not rank_file.exists():
        raise ValueError(f"{path} has no state for rank {rank}: it was written by a run with another "
                         f"number of processes; resume with the same world size")
    trainer_state = json.loads((path / TRAINER).read_text())
    # Our own file (optimizer states, numpy RNG tuples): not a weights-only payload.
    return trainer_state, torch.load(rank_file, weights_only=False)
