"""Rotary embedding frequencies exactly as Hugging Face computes them.

Megatron-Core's llama3 scaling hard-codes original_max_position_embeddings=8192 and its
YaRN path lives in the MLA config, so the actor uses Megatron's plain RoPE module and
overwrites its `inv_freq` with the Hugging Face values (named special case "hf_rope").
YaRN's attention factor m multiplies both cos and sin in Hugging Face, i.e. both q and k, so
it scales every attention logit by m^2: the actor folds it into `softmax_scale`.
"""
from __future__ import annotations

from typing import Any

import torch

from megatron_pacore.hf_config import head_dim_of

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def rope_parameters(hf_config: Any) -> dict:
    """The rope dict of a transformers 5.x config (`rope_parameters`), or 4.x (`rope_scaling`)."""
    params = getattr(hf_config, "rope_parameters", None)
    if params is None:
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    params = dict(params)
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    return params


def hf_rope(hf_config: Any) -> tuple[torch.Tensor, float]:
    """(inv_freq [d/2] fp32, attention_scaling) for a Hugging Face config.

    Raises:
        ValueError: a rope_type other than SUPPORTED_ROPE_TYPES, or partial rotary factor.
    """
    params = rope_parameters(hf_config)
    rope_type = params["rope_type"]
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(
            f"config.rope_parameters.rope_type={rope_type!r} is not supported; "
            f"use one of {SUPPORTED_ROPE_TYPES}"
        )
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("config.rope_parameters.partial_rotary_factor != 1 is not supported")
    if rope_type == "default":
        dim = head_dim_of(hf_config)
        base = float(params["rope_theta"])
        exponent = torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim
        return 1.0 / (base**exponent), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](hf_config, torch.device("cpu"))
    return inv_freq.to(torch.float32), float(scaling)
