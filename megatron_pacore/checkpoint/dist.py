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
from megatron_pacore.checkpoint.hf_io import copy_side_files, expected_shapes, load_hf_config
from megatron_pacore.checkpoint.mapping import OUTPUT, Table
from megatron_pacore.hf_config import Dims, dims_of
from megatron_pacore.training.models import ModelInfo, unwrap

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


def check_megatron(reader: PieceReader, hf_config, dims: Dims, critic: bool = False) -> None:
    """Raise ValueError naming the tensors a checkpoint misses, or holds with the wrong shape.

    critic: the model's output layer is a value head, not the vocabulary projection (its keys
    are checked by dist_checkpointing's load)."""
    table = Table.for_config(hf_config).stored()
    hf_shapes = expected_shapes(hf_config)
    stored = reader.tensors()
    missing, wrong = [], []
    for m in table.mappings:
        if critic and m.megatron == OUTPUT:
            continue
        key = m.stored_key
        shape = m.global_shape([hf_shapes[n] for n in m.hf_names(0)], dims)
        shape = (table.num_layers, *shape) if m.per_layer else shape
        if key not in stored:
            missing.append(key)
        elif tuple(stored[key].size) != shape:
            wrong.append(f"{key}: {tuple(stored[key].size)} != {shape}")
    if missing or wrong:
        raise ValueError(f"{reader.path} is not a {table.family.name} checkpoint of this config: "
                         f"missing {missing[:20]}, wrong shape {wrong[:20]}")


def save_model(model, info: ModelInfo, ckpt: str | Path, ckpt_info: CheckpointInfo,
               hf_dir: str | Path | None = None) -> None:
    """Save a live (TP/PP-sharded) model with Megatron's dist_checkpointing; all ranks call.

    Needs the `if __name__ == "__main__":` guard in the entry script (the writer forks).

    Raises:
        ValueError: ckpt_info disagrees with the model's family or padded vocabulary.
    """
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    if (ckpt_info.family, ckpt_info.padded_vocab_size) != (info.family.name, info.padded_vocab_size):
        raise ValueError(f"checkpoint info says {ckpt_info.family} with vocabulary {ckpt_info.padded_vocab_size}; "
                         f"the model is {info.family.name} with {info.padded_vocab_size}")
    ckpt = Path(ckpt)
    if dist.get_rank() == 0:
        ckpt.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    dist_checkpointing.save(unwrap(model).sharded_state_dict(), str(ckpt))
    if dist.get_rank() == 0:
        write_info(ckpt, ckpt_info, hf_dir=hf_dir, hf_config=info.hf_config)
    dist.barrier()


def load_model(model, info: ModelInfo, ckpt: str | Path) -> None:
    """Load a checkpoint into a live model built for any TP/PP layout; all ranks call.

    The checkpoint may hold more than the model (optimizer state, ...): that is not ours to
    load. Everything the model has must be in it, except Transformer Engine `_extra_state`
    (FP8 scaling state), which a converted checkpoint lacks and which keeps its initial value.

    Raises:
        ValueError: another family, a layout the padded vocabulary does not divide, tensors
            of the wrong shape, or model tensors the checkpoint does not hold (naming them).
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.core import CheckpointingException
    from megatron.core.dist_checkpointing.validation import StrictHandling
    from torch.distributed.checkpoint.api import CheckpointException as TorchCheckpointException

    module = unwrap(model)
    ckpt_info = read_info(ckpt)
    if ckpt_info.family != info.family.name:
        raise ValueError(f"{ckpt} holds a {ckpt_info.family} model; this model is {info.family.name}")
    ckpt_info.check_layout(module.config.tensor_model_parallel_size)
    if info.padded_vocab_size != ckpt_info.padded_vocab_size:
        raise ValueError(f"model padded vocabulary {info.padded_vocab_size} != checkpoint's "
                         f"{ckpt_info.padded_vocab_size}; build it with padded_vocab=read_info(ckpt).padded_vocab_size")
    try:
        check_megatron(PieceReader(ckpt), info.hf_config, dims_of(info.hf_config, info.padded_vocab_size),
                       critic=info.is_critic)
    except ValueError as e:
        raise ValueError(f"{ckpt} does not fit this model: {e}") from e
    try:
        # Megatron's meanings: `missing` = in the checkpoint but not asked for (e.g. optimizer
        # state); `unexpected` = asked for by the model but absent from the checkpoint.
        state, _not_asked_for, absent = dist_checkpointing.load(
            module.sharded_state_dict(), str(ckpt), strict=StrictHandling.RETURN_ALL)
    except (CheckpointingException, TorchCheckpointException) as e:
        raise ValueError(f"{ckpt} does not fit this model: {e}") from e
    absent = sorted(k for k in absent if "_extra_state" not in k)
    if absent:
        raise ValueError(f"{ckpt}: tensors missing for this model: {absent[:20]}")
    result = module.load_state_dict(state, strict=False)
    bad = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if bad:
        raise ValueError(f"{ckpt}: model parameters not loaded: {bad[:20]}")
