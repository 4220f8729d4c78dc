"""Declarative Hugging Face <-> Megatron-Core tables: one list of tensor mappings per family.

Each entry is a mapping object of `checkpoint.transforms` (Copy, QKV, GatedMLP, VocabPadded,
Tied) naming one Megatron tensor, the Hugging Face tensor(s) it is made of and the axis tensor
parallelism splits. The converter (`convert`), the loader (`loader`, `hf_io`), the
distributed-checkpoint checks (`dist`) and the weight-sync export (`export`) all walk these
tables through `Table`, in the orders it defines:

  by_layer()  embedding, layer 0 ... layer L-1, then the rest (final norm, output layer): the
              Hugging Face order, in which exports and weight sync stream the model;
  by_key()    mapping by mapping, every layer of one before the next: the order of the
              Megatron checkpoint's stacked keys, in which the converter writes them.

Megatron names are the *canonical* (Transformer Engine / dist_checkpointing) names, e.g.
`decoder.layers.{layer}.self_attention.linear_qkv.layer_norm_weight`; the local (CPU) layer
spec keeps the input norm as `input_layernorm.weight`, translated by `canonical_name`.
`{layer}` is the *global* layer index; pipeline stages add their offset.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from megatron_pacore.checkpoint.transforms import QKV, Copy, GatedMLP, Mapping, Tied, VocabPadded
from megatron_pacore.hf_config import Family, family_for, tie_word_embeddings

EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT = "output_layer.weight"
HF_EMBEDDING = "model.embed_tokens.weight"
HF_OUTPUT = "lm_head.weight"
L = "decoder.layers.{layer}."
H = "model.layers.{layer}."


def _mappings(family: Family, tied: bool) -> tuple[Mapping, ...]:
    qkv = tuple(H + f"self_attn.{p}_proj.weight" for p in "qkv")
    rows: list[Mapping] = [
        VocabPadded(EMBEDDING, (HF_EMBEDDING,), tp_axis=0),
        Copy(L + "self_attention.linear_qkv.layer_norm_weight", (H + "input_layernorm.weight",)),
        QKV(L + "self_attention.linear_qkv.weight", qkv, tp_axis=0),
    ]
    if family.qkv_bias:
        bias = tuple(H + f"self_attn.{p}_proj.bias" for p in "qkv")
        rows.append(QKV(L + "self_attention.linear_qkv.bias", bias, tp_axis=0))
    if family.qk_norm:
        rows += [
            Copy(L + "self_attention.q_layernorm.weight", (H + "self_attn.q_norm.weight",)),
            Copy(L + "self_attention.k_layernorm.weight", (H + "self_attn.k_norm.weight",)),
        ]
    rows += [
        Copy(L + "self_attention.linear_proj.weight", (H + "self_attn.o_proj.weight",), tp_axis=1),
        Copy(L + "mlp.linear_fc1.layer_norm_weight", (H + "post_attention_layernorm.weight",)),
        GatedMLP(L + "mlp.linear_fc1.weight", (H + "mlp.gate_proj.weight", H + "mlp.up_proj.weight"), tp_axis=0),
        Copy(L + "mlp.linear_fc2.weight", (H + "mlp.down_proj.weight",), tp_axis=1),
        Copy("decoder.final_layernorm.weight", ("model.norm.weight",)),
        Tied(OUTPUT, (HF_EMBEDDING,), tp_axis=0) if tied else VocabPadded(OUTPUT, (HF_OUTPUT,), tp_axis=0),
    ]
    return tuple(rows)


@dataclass(frozen=True)
class Table:
    """The mappings of one checkpoint: a family, tied or not, at a depth."""

    family: Family
    tied: bool
    num_layers: int
    mappings: tuple[Mapping, ...]

    @classmethod
    def of(cls, family: Family, tied: bool, num_layers: int) -> "Table":
        return cls(family, tied, num_layers, _mappings(family, tied))

    @classmethod
    def for_config(cls, hf_config: Any) -> "Table":
        """The table of a Hugging Face config (family, tie flag and depth read from it)."""
        return cls.of(family_for(hf_config), tie_word_embeddings(hf_config), hf_config.num_hidden_layers)

    def stored(self) -> "Table":
        """Only the mappings with a tensor of their own (a tied output layer has none)."""
        return Table(self.family, self.tied, self.num_layers, tuple(m for m in self.mappings if m.stored))

    def by_layer(self) -> list[tuple[Optional[int], list[Mapping]]]:
        """(layer or None, mappings) steps: the ones before the layers, each layer, the rest."""
        first = next((i for i, m in enumerate(self.mappings) if m.per_layer), len(self.mappings))
        head = [m for m in self.mappings[:first] if not m.per_layer]
        tail = [m for m in self.mappings[first:] if not m.per_layer]
        layer = [m for m in self.mappings if m.per_layer]
        steps = [(None, head)] if head else []
        steps += [(i, layer) for i in range(self.num_layers)]
        return steps + ([(None, tail)] if tail else [])

    def by_key(self) -> Iterator[tuple[Mapping, Optional[int]]]:
        """(mapping, layer or None), every layer of one mapping before the next mapping."""
        for m in self.mappings:
            for layer in (range(self.num_layers) if m.per_layer else [None]):
                yield m, layer

    def index(self) -> dict[str, tuple[Mapping, Optional[int]]]:
        """canonical Megatron name -> (mapping, global layer or None), every tensor of the model."""
        return {m.megatron_name(layer): (m, layer) for m, layer in self.by_key()}

    def hf_names(self) -> list[str]:
        """Every Hugging Face tensor name the table reads, once each."""
        names: dict[str, None] = {}
        for m, layer in self.by_key():
            names.update(dict.fromkeys(m.hf_names(layer)))
        return list(names)


# The local (CPU) layer spec names the two pre-norms differently from the TE spec; Megatron's
# own `sharded_state_dict_keys_map` of the local spec does the same translation.
LOCAL_SPEC_ALIASES = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}
_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


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

