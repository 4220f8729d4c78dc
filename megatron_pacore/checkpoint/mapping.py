"""Declarative Hugging Face <-> Megatron-Core name and shape tables, one per model family.

Each `Rule` says which Hugging Face tensor(s) one Megatron tensor is made of, by which named
transform, and along which axis tensor parallelism splits it. The converter
(`checkpoint.convert`), the in-memory loader (`checkpoint.loader`) and the weight-sync export
(`checkpoint.export`) all read these tables; the transforms live in `checkpoint.transforms`.

Megatron names are the *canonical* (Transformer Engine / dist_checkpointing) names, e.g.
`decoder.layers.{layer}.self_attention.linear_qkv.layer_norm_weight`; the local (CPU) layer
spec keeps the input norm as `input_layernorm.weight`, translated by `canonical_name`.
`{layer}` is the *global* layer index; pipeline stages add their offset (`layer_offset`).

Named special cases (the `transform` field):
  copy     same tensor, optionally split along `tp_axis`.
  qkv      q, k, v -> one matrix interleaved per query group: for each group g,
           [q heads of g; k_g; v_g] (Megatron's fused QKV layout); TP splits whole groups.
  gate_up  gate, up -> fc1; each TP shard is [gate shard; up shard], so the global
           (TP=1, dist_checkpointing) layout is [gate; up].
  vocab    rows padded with zeros to a multiple of 128 * TP, trimmed again on export.
  tied     output layer: with tie_word_embeddings it is the input embedding (export skips it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

TRANSFORMS = ("copy", "qkv", "gate_up", "vocab", "tied")


@dataclass(frozen=True)
class Rule:
    """One Megatron tensor and the Hugging Face tensors it is built from."""

    megatron: str
    """Canonical Megatron name; `{layer}` stands for the global layer index."""
    hf: tuple[str, ...]
    """Hugging Face names, in the order the transform takes them."""
    transform: str = "copy"
    """One of TRANSFORMS."""
    tp_axis: Optional[int] = None
    """Axis split across tensor-parallel ranks; None when replicated."""

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"Rule.transform must be one of {TRANSFORMS}, got {self.transform!r}")

    @property
    def per_layer(self) -> bool:
        return "{layer}" in self.megatron

    def megatron_name(self, layer: Optional[int] = None) -> str:
        return self.megatron.format(layer=layer) if self.per_layer else self.megatron

    def hf_names(self, layer: Optional[int] = None) -> tuple[str, ...]:
        return tuple(n.format(layer=layer) for n in self.hf) if self.per_layer else self.hf


@dataclass(frozen=True)
class Family:
    """A model family: its Hugging Face `model_type`s, architecture flags and rule table."""

    name: str
    model_types: tuple[str, ...]
    qkv_bias: bool
    """q/k/v projections carry a bias (Qwen2)."""
    qk_norm: bool
    """RMSNorm on queries and keys per head (Qwen3)."""
    rules: tuple[Rule, ...]

    def rules_for(self, tie_word_embeddings: bool) -> tuple[Rule, ...]:
        """The table for one checkpoint: a tied model has no `lm_head.weight` of its own."""
        if not tie_word_embeddings:
            return self.rules
        return tuple(
            Rule(r.megatron, ("model.embed_tokens.weight",), "tied", r.tp_axis)
            if r.megatron == OUTPUT else r
            for r in self.rules
        )


EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT = "output_layer.weight"
L = "decoder.layers.{layer}."
H = "model.layers.{layer}."


def _rules(qkv_bias: bool, qk_norm: bool) -> tuple[Rule, ...]:
    qkv = tuple(H + f"self_attn.{p}_proj.weight" for p in "qkv")
    rules = [
        Rule(EMBEDDING, ("model.embed_tokens.weight",), "vocab", tp_axis=0),
        Rule(L + "self_attention.linear_qkv.layer_norm_weight", (H + "input_layernorm.weight",)),
        Rule(L + "self_attention.linear_qkv.weight", qkv, "qkv", tp_axis=0),
    ]
    if qkv_bias:
        bias = tuple(H + f"self_attn.{p}_proj.bias" for p in "qkv")
        rules.append(Rule(L + "self_attention.linear_qkv.bias", bias, "qkv", tp_axis=0))
    if qk_norm:
        rules += [
            Rule(L + "self_attention.q_layernorm.weight", (H + "self_attn.q_norm.weight",)),
            Rule(L + "self_attention.k_layernorm.weight", (H + "self_attn.k_norm.weight",)),
        ]
    rules += [
        Rule(L + "self_attention.linear_proj.weight", (H + "self_attn.o_proj.weight",), tp_axis=1),
        Rule(L + "mlp.linear_fc1.layer_norm_weight", (H + "post_attention_layernorm.weight",)),
        Rule(L + "mlp.linear_fc1.weight",
             (H + "mlp.gate_proj.weight", H + "mlp.up_proj.weight"), "gate_up", tp_axis=0),
        Rule(L + "mlp.linear_fc2.weight", (H + "mlp.down_proj.weight",), tp_axis=1),
        Rule("decoder.final_layernorm.weight", ("model.norm.weight",)),
        Rule(OUTPUT, ("lm_head.weight",), "vocab", tp_axis=0),
    ]
    return tuple(rules)


FAMILIES: dict[str, Family] = {
    "qwen3": Family("qwen3", ("qwen3",), qkv_bias=False, qk_norm=True, rules=_rules(False, True)),
    "qwen2": Family("qwen2", ("qwen2",), qkv_bias=True, qk_norm=False, rules=_rules(True, False)),
    "llama": Family("llama", ("llama",), qkv_bias=False, qk_norm=False, rules=_rules(False, False)),
}

# The local (CPU) layer spec names the two pre-norms differently from the TE spec; Megatron's
# own `sharded_state_dict_keys_map` of the local spec does the same translation.
LOCAL_SPEC_ALIASES = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}
_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


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


def canonical_name(local_name: str, layer_offset: int = 0) -> str:
    """Megatron parameter name of one pipeline stage -> canonical name with a global layer.

    `decoder.layers.0.input_layernorm.weight` on a stage whose first layer is global layer 4
    becomes `decoder.layers.4.self_attention.linear_qkv.layer_norm_weight`.
    """
    m = _LAYER_RE.match(local_name)
    if not m:
        return local_name
    rest = LOCAL_SPEC_ALIASES.get(m.group(2), m.group(2))
    return f"decoder.layers.{int(m.group(1)) + layer_offset}.{rest}"


def rule_index(family: Family, tie_word_embeddings: bool, num_layers: int) -> dict[str, tuple[Rule, Optional[int]]]:
    """canonical Megatron name -> (rule, global layer or None), for every tensor of a model."""
    out: dict[str, tuple[Rule, Optional[int]]] = {}
    for rule in family.rules_for(tie_word_embeddings):
        layers = range(num_layers) if rule.per_layer else [None]
        for layer in layers:
            out[rule.megatron_name(layer)] = (rule, layer)
    return out


def expected_hf_names(family: Family, tie_word_embeddings: bool, num_layers: int) -> list[str]:
    """Every Hugging Face tensor name a checkpoint of this family and depth must hold."""
    names: list[str] = []
    for rule in family.rules_for(tie_word_embeddings):
        for layer in (range(num_layers) if rule.per_layer else [None]):
            for n in rule.hf_names(layer):
                if n not in names:
                    names.append(n)
    return names
