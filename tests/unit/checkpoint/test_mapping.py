"""Family tables: detection, coverage, tied embeddings, iteration orders and layer offsets."""
from types import SimpleNamespace

import pytest

from megatron_pacore.checkpoint.mapping import Table, canonical_name
from megatron_pacore.checkpoint.transforms import QKV, GatedMLP, Tied, VocabPadded
from megatron_pacore.hf_config import FAMILIES, family_for


def test_family_is_chosen_by_model_type():
    assert family_for(SimpleNamespace(model_type="qwen2")).name == "qwen2"
    assert family_for(SimpleNamespace(model_type="llama")).name == "llama"


def test_unknown_model_type_names_the_field():
    with pytest.raises(ValueError, match="model_type='mistral'"):
        family_for(SimpleNamespace(model_type="mistral"))


def test_unsupported_bias_option_is_named():
    with pytest.raises(ValueError, match="attention_bias"):
        family_for(SimpleNamespace(model_type="llama", attention_bias=True))


def test_local_spec_norm_names_map_to_canonical_with_stage_offset():
    assert (canonical_name("decoder.layers.1.input_layernorm.weight", layer_offset=4)
            == "decoder.layers.5.self_attention.linear_qkv.layer_norm_weight")
    assert (canonical_name("decoder.layers.0.pre_mlp_layernorm.weight", 2)
            == "decoder.layers.2.mlp.linear_fc1.layer_norm_weight")
    assert canonical_name("embedding.word_embeddings.weight", 3) == "embedding.word_embeddings.weight"


def test_tied_table_reads_output_layer_from_embeddings():
    idx = Table.of(FAMILIES["qwen3"], tied=True, num_layers=2).index()
    mapping, layer = idx["output_layer.weight"]
    assert isinstance(mapping, Tied) and not mapping.stored
    assert mapping.hf == ("model.embed_tokens.weight",) and layer is None
    assert "lm_head.weight" not in Table.of(FAMILIES["qwen3"], True, 2).hf_names()
    assert "lm_head.weight" in Table.of(FAMILIES["qwen3"], False, 2).hf_names()
    untied = Table.of(FAMILIES["qwen3"], False, 2).index()["output_layer.weight"][0]
    assert isinstance(untied, VocabPadded) and untied.stored


def test_stored_table_has_no_tied_output_layer():
    stored = Table.of(FAMILIES["qwen3"], True, 2).stored()
    assert "output_layer.weight" not in [m.megatron for m in stored.mappings]
    assert "output_layer.weight" in [m.megatron for m in Table.of(FAMILIES["qwen3"], False, 2).stored().mappings]


def test_tables_cover_family_specific_tensors():
    q3 = Table.of(FAMILIES["qwen3"], True, 1).hf_names()
    q2 = Table.of(FAMILIES["qwen2"], False, 1).hf_names()
    ll = Table.of(FAMILIES["llama"], False, 1).hf_names()
    assert "model.layers.0.self_attn.q_norm.weight" in q3 and "model.layers.0.self_attn.q_norm.weight" not in q2
    assert "model.layers.0.self_attn.k_proj.bias" in q2 and "model.layers.0.self_attn.k_proj.bias" not in ll
    # Every layer tensor appears once per layer.
    assert len(Table.of(FAMILIES["llama"], False, 3).hf_names()) == 3 + 3 * 9


def test_qwen2_table_uses_one_mapping_kind_per_special_case():
    kinds = {m.megatron.split(".")[-2] + "." + m.megatron.split(".")[-1]: type(m)
             for m in Table.of(FAMILIES["qwen2"], False, 1).mappings}
    assert kinds["linear_qkv.weight"] is QKV and kinds["linear_qkv.bias"] is QKV
    assert kinds["linear_fc1.weight"] is GatedMLP
    assert kinds["word_embeddings.weight"] is VocabPadded


def test_layer_order_is_embedding_then_each_layer_then_the_rest():
    steps = Table.of(FAMILIES["llama"], False, 2).by_layer()
    assert [layer for layer, _ in steps] == [None, 0, 1, None]
    assert [m.megatron for m in steps[0][1]] == ["embedding.word_embeddings.weight"]
    assert [m.megatron for m in steps[-1][1]] == ["decoder.final_layernorm.weight", "output_layer.weight"]
    assert len(steps[1][1]) == 6  # norm, qkv, proj, norm, fc1, fc2


def test_key_order_gives_every_layer_of_a_mapping_before_the_next():
    order = [(m.stored_key, layer) for m, layer in Table.of(FAMILIES["llama"], False, 2).by_key()]
    assert order[:3] == [("embedding.word_embeddings.weight", None),
                         ("decoder.layers.self_attention.linear_qkv.layer_norm_weight", 0),
                         ("decoder.layers.self_attention.linear_qkv.layer_norm_weight", 1)]
