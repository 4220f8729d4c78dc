"""Megatron distributed checkpoints (dist_checkpointing, torch_dist format) of our models.

A checkpoint directory holds Megatron's files (metadata.json, common.pt, .metadata,
*.distcp), plus:
  megatron_pacore.json  family, padded vocabulary, layout it was written at, dtype;
  hf/                   the Hugging Face config and tokenizer files, for export and rebuild.
The tensors are stored with global shapes (TP/PP independent), so a checkpoint written at
TP=2 loads at TP=1. The padded vocabulary travels with it: a layout whose TP does not divide
it is refused with a ValueError.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_pacore.checkpoint.dcp_read import PieceReader
from megatron_pacore.checkpoint.hf_io import copy_side_files, dims_of, expected_shapes, load_hf_config
from megatron_pacore.checkpoint.mapping import OUTPUT, Family, Rule, family_for
from megatron_pacore.checkpoint.transforms import Dims

INFO = "megatron_pacore.json"
# Megatron's dist_checkpointing files: its format declaration and the common (non-sharded)
# state, empty for a GPTModel.
MCORE_CONFIG = "metadata.json"
MCORE_COMMON = "common.pt"
MCORE_FORMAT = {"sharded_backend": "torch_dist", "sharded_backend_version": 1,
                "common_backend": "torch", "common_backend_version": 1}
HF_SUBDIR = "hf"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint needs besides its tensors (stored as megatron_pacore.json)."""

    family: str
    padded_vocab_size: int
    num_layers: int
    tp: int
    pp: int
    dtype: str
    format_version: int = FORMAT_VERSION

    def check_layout(self, tp: int) -> None:
        if self.padded_vocab_size % tp:
            raise ValueError(
                f"checkpoint vocabulary is padded to {self.padded_vocab_size}, which tp={tp} does not "
                f"divide; load it at a tp dividing it or re-convert with --tp {tp}")


def write_info(ckpt: str | Path, info: CheckpointInfo, hf_dir: str | Path | None = None,
               hf_config: Any = None) -> None:
    """Write megatron_pacore.json, Megatron's metadata.json/common.pt and the hf/ side files.

    metadata.json and common.pt are written here rather than through megatron.core (whose
    import alone takes seconds in the converter); a test checks that Megatron reads them.
    """
    ckpt = Path(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / MCORE_CONFIG).write_text(json.dumps(MCORE_FORMAT))
    if not (ckpt / MCORE_COMMON).exists():
        torch.save({}, ckpt / MCORE_COMMON)
    (ckpt / INFO).write_text(json.dumps(asdict(info), indent=2))
    side = ckpt / HF_SUBDIR
    side.mkdir(exist_ok=True)
    if hf_dir is not None:
        copy_side_files(hf_dir, side)
    if hf_config is not None:
        hf_config.save_pretrained(side)


def read_info(ckpt: str | Path) -> CheckpointInfo:
    """The checkpoint's megatron_pacore.json.

    Raises:
        ValueError: not a checkpoint written by this package (naming the missing file).
    """
    path = Path(ckpt) / INFO
    if not path.is_file():
        raise ValueError(f"--megatron {ckpt}: no {INFO} (not a checkpoint written by megatron_pacore)")
    data = json.loads(path.read_text())
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {data.get('format_version')} != {FORMAT_VERSION}")
    return CheckpointInfo(**data)


def hf_config_of(ckpt: str | Path):
    """The Hugging Face config stored with the checkpoint."""
    return load_hf_config(Path(ckpt) / HF_SUBDIR)


def stored_key(rule: Rule) -> str:
    """Key under which dist_checkpointing stores the rule's tensor (layers stacked)."""
    if rule.per_layer:
        return rule.megatron.replace("{layer}.", "")
    return rule.megatron


def stored_rules(family: Family, tie: bool) -> list[Rule]:
    """Rules with a tensor of their own in the checkpoint (a tied output layer has none)."""
    return [r for r in family.rules_for(tie) if r.transform != "tied"]


def global_shape(rule: Rule, hf_shapes: list[tuple[int, ...]], dims: Dims) -> tuple[int, ...]:
    """Shape of the global (TP=1) Megatron tensor of one layer, from the HF shapes."""
    if rule.transform in ("qkv", "gate_up"):
        return (sum(s[0] for s in hf_shapes), *hf_shapes[0][1:])
    if rule.transform in ("vocab", "tied"):
        return (dims.padded_vocab_size, *hf_shapes[0][1:])
    return tuple(hf_shapes[0])


def check_megatron(reader: PieceReader, family: Family, hf_config, dims: Dims, critic: bool = False) -> None:
    """Raise ValueError naming the tensors a checkpoint misses, or holds with the wrong shape.

    critic: the checkpoint's output layer is a value head, not the vocabulary projection."""
    tie = bool(getattr(hf_config, "tie_word_embeddings", False))
    hf_shapes = expected_shapes(hf_config)
    stored = reader.tensors()
    missing, wrong = [], []
    L = hf_config.num_hidden_layers
    for rule in stored_rules(family, tie):
        if critic and rule.megatron == OUTPUT:
            continue
        key = stored_key(rule)
        shape = global_shape(rule, [hf_shapes[n] for n in rule.hf_names(0)], dims)
        shape = (L, *shape) if rule.per_layer else shape
        if key not in stored:
            missing.append(key)
        elif tuple(stored[key].size) != shape:
            wrong.append(f"{key}: {tuple(stored[key].size)} != {shape}")
    if missing or wrong:
        raise ValueError(f"{reader.path} is not a {family.name} checkpoint of this config: "
                         f"missing {missing[:20]}, wrong shape {wrong[:20]}")


def save_model(model, ckpt: str | Path, info: CheckpointInfo, hf_dir: str | Path | None = None) -> None:
    """Save a live (TP/PP-sharded) model with Megatron's dist_checkpointing; all ranks call.

    Needs the `if __name__ == "__main__":` guard in the entry script (the writer forks).
    """
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    from megatron_pacore.checkpoint.loader import unwrap

    ckpt = Path(ckpt)
    if dist.get_rank() == 0:
        ckpt.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    dist_checkpointing.save(unwrap(model).sharded_state_dict(), str(ckpt))
    if dist.get_rank() == 0:
        write_info(ckpt, info, hf_dir=hf_dir, hf_config=unwrap(model).hf_config)
    dist.barrier()


def load_model(model, ckpt: str | Path) -> None:
    """Load a checkpoint into a live model built for any TP/PP layout; all ranks call.

    Transformer Engine `_extra_state` (FP8 scaling state) absent from a converted checkpoint
    is left at its initial value; any other missing or unexpected tensor is a ValueError.
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.core import CheckpointingException
    from megatron.core.dist_checkpointing.validation import StrictHandling
    from torch.distributed.checkpoint.api import CheckpointException as TorchCheckpointException

    from megatron_pacore.checkpoint.loader import unwrap

    gpt = unwrap(model)
    info = read_info(ckpt)
    family = family_for(gpt.hf_config).name
    if info.family != family:
        raise ValueError(f"{ckpt} holds a {info.family} model; this model is {family}")
    info.check_layout(gpt.config.tensor_model_parallel_size)
    if gpt.padded_vocab_size != info.padded_vocab_size:
        raise ValueError(f"model padded vocabulary {gpt.padded_vocab_size} != checkpoint's "
                         f"{info.padded_vocab_size}; build it with padded_vocab=read_info(ckpt).padded_vocab_size")
    try:
        check_megatron(PieceReader(ckpt), family_for(gpt.hf_config), gpt.hf_config,
                       dims_of(gpt.hf_config, gpt.padded_vocab_size), critic=getattr(gpt, "is_critic", False))
    except ValueError as e:
        raise ValueError(f"{ckpt} does not fit this model: {e}") from e
    try:
        state, missing, _unexpected = dist_checkpointing.load(
            gpt.sharded_state_dict(), str(ckpt), strict=StrictHandling.RETURN_ALL)
    except (CheckpointingException, TorchCheckpointException) as e:
        raise ValueError(f"{ckpt} does not fit this model: {e}") from e
    # A checkpoint may hold more (optimizer state ...): unexpected keys are not ours to load.
    missing = sorted(k for k in missing if "_extra_state" not in k)
    if missing:
        raise ValueError(f"{ckpt}: tensors missing for this model: {missing[:20]}")
    result = gpt.load_state_dict(state, strict=False)
    bad = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if bad:
        raise ValueError(f"{ckpt}: model parameters not loaded: {bad[:20]}")
