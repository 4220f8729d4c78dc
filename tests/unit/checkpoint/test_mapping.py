"""Family tables: detection, coverage, tied embeddings and pipeline layer offsets."""
from types import SimpleNamespace

import pytest

from megatron_pacore.checkpoint.mapping import (
    FAMILIES, canonical_name, expected_hf_names, family_for, rule_index)


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
    idx = rule_index(FAMILIES["qwen3"], tie_word_embeddings=True, num_layers=2)
    rule, layer = idx["output_layer.weight"]
    assert rule.transform == "tied" and rule.hf == ("model.embed_tokens.weight",) and layer is None
    assert "lm_head.weight" not in expected_hf_names(FAMILIES["qwen3"], True, 2)
    assert "lm_head.weight" in expected_hf_names(FAMILIES["qwen3"], False, 2)


def test_tables_cover_family_specific_tensors():
    q3 = expected_hf_names(FAMILIES["qwen3"], True, 1)
    q2 = expected_hf_names(FAMILIES["qwen2"], False, 1)
    ll = expected_hf_names(FAMILIES["llama"], False, 1)
    assert "model.layers.0.self_attn.q_norm.weight" in q3 and "model.layers.0.self_attn.q_norm.weight" not in q2
    assert "model.layers.0.self_attn.k_proj.bias" in q2 and "model.layers.0.self_attn.k_proj.bias" not in ll
    # Every layer tensor appears once per layer.
    assert len(expected_hf_names(FAMILIES["llama"], False, 3)) == 3 + 3 * 9
