"""What both `training/` and `checkpoint/` read off a Hugging Face model config, in one place.

    family = family_for(hf_config)             # Family("qwen3", qkv_bias=False, qk_norm=True)
    dims = dims_of(hf_config, padded_vocab_size(hf_config.vocab_size, tp=2))
    tie_word_embeddings(hf_config)             # the one reading of the tie flag

The model builder (`training.models`) needs the family's architecture flags, the GQA group
count, the head size and the padded vocabulary; the converter, loader and weight export
(`checkpoint/`) need the same numbers to lay tensors out. Both packages import this module,
and it imports neither, so `checkpoint -> training` stays the only direction between them. It
imports torch (for `DTYPES`) but not megatron.core or transformers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Precision names of configs and CLIs (`model.precision`, `--dtype`) -> torch dtypes."""


@dataclass(frozen=True)
class Family:
    """A supported model family: its Hugging Face `model_type`s and architecture flags.

    The HF <-> Megatron tensor table of each family is in `checkpoint.mapping`."""

    name: str
    model_types: tuple[str, ...]
    qkv_bias: bool
    """q/k/v projections carry a bias (Qwen2)."""
    qk_norm: bool
    """RMSNorm on queries and keys per head (Qwen3)."""


FAMILIES: dict[str, Family] = {
    "qwen3": Family("qwen3", ("qwen3",), qkv_bias=False, qk_norm=True),
    "qwen2": Family("qwen2", ("qwen2",), qkv_bias=True, qk_norm=False),
    "llama": Family("llama", ("llama",), qkv_bias=False, qk_norm=False),
}


def family_for(hf_config: Any) -> Family:
    """The family of a Hugging Face config, checked against what the tables cover.

    Raises:
        ValueError: unknown model_type, or an option the table does not cover (naming it).
    """
    model_type = getattr(hf_config, "model_type", None)
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            break
    else:
        known = sorted(t for f in FAMILIES.values() for t in f.model_types)
        raise ValueError(f"config.model_type={model_type!r} is not supported; known: {known}")
    if fam.name in ("qwen3", "llama") and getattr(hf_config, "attention_bias", False):
        raise ValueError(f"config.attention_bias=True is not supported for {fam.name}")
    if getattr(hf_config, "mlp_bias", False):
        raise ValueError("config.mlp_bias=True is not supported")
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise ValueError(f"config.hidden_act={hf_config.hidden_act!r} is not supported (silu only)")
    return fam


def tie_word_embeddings(hf_config: Any) -> bool:
    """Whether the checkpoint's output layer is its input embedding (no `lm_head.weight`)."""
    return bool(getattr(hf_config, "tie_word_embeddings", False))


def head_dim_of(hf_config: Any) -> int:
    """Per-head size d: config.head_dim when set, else hidden_size // num_attention_heads."""
    return getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads


def num_query_groups_of(hf_config: Any) -> int:
    """GQA key/value heads: config.num_key_value_heads when set, else one per attention head."""
    return getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads


def padded_vocab_size(vocab_size: int, tp: int, divisible_by: int = 128) -> int:
    """Smallest multiple of divisible_by * tp that is >= vocab_size (Megatron-LM's rule)."""
    multiple = divisible_by * tp
    return -(-vocab_size // multiple) * multiple


@dataclass(frozen=True)
class Dims:
    """The sizes the tensor mappings need. Shapes elsewhere use: V vocabulary, Vp padded
    vocabulary, h hidden size, d head dim, nq query heads, ng query groups (key/value heads)."""

    num_heads: int
    num_groups: int
    head_dim: int
    vocab_size: int
    padded_vocab_size: int

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.num_groups


def dims_of(hf_config: Any, padded_vocab: int) -> Dims:
    """The `Dims` of a Hugging Face config with the vocabulary padded to `padded_vocab`."""
    return Dims(
        num_heads=hf_config.num_attention_heads,
        num_groups=num_query_groups_of(hf_config),
        head_dim=head_dim_of(hf_config),
        vocab_size=hf_config.vocab_size,
        padded_vocab_size=padded_vocab,
    )


def apply_hf_overrides(hf_config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Set `overrides` on a Hugging Face config in place (a dict value is merged into a dict
    attribute, so `{"rope_parameters": {"rope_type": "yarn", ...}}` keeps the checkpoint's
    rope_theta) and return the merged values, for vLLM's `hf_overrides` (the engine and the
    trainer then build the same model, e.g. YaRN-extended to 131072 tokens).

    Raises:
        ValueError: a key the config does not have (a misspelt override would be ignored).
    """
    merged: dict[str, Any] = {}
    for key, value in overrides.items():
        if not hasattr(hf_config, key):
            raise ValueError(f"model.hf_overrides: the Hugging Face config has no field {key!r}")
        old = getattr(hf_config, key)
        if isinstance(old, dict) and isinstance(value, dict):
            value = {**old, **value}
        setattr(hf_config, key, value)
        merged[key] = value
    return merged
