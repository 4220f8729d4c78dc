"""Checkpoints that do not match their family table fail with errors that name the tensors."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from megatron_pacore.checkpoint.hf_io import HFCheckpoint, HFStreamWriter


def _copy_with(src, dst, edit):
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_tiny_checkpoints_pass_the_check(tiny_models):
    for d in tiny_models.values():
        HFCheckpoint(d).check()


def test_missing_tensor_is_named(tiny_models, tmp_path):
    d = _copy_with(tiny_models["qwen2"], tmp_path / "m", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing \['model.layers.1.mlp.up_proj.weight'\]"):
        HFCheckpoint(d).check()


def test_unknown_tensor_is_named(tiny_models, tmp_path):
    def add(t):
        t["model.layers.0.mlp.extra_proj.weight"] = torch.zeros(2, 2)
    d = _copy_with(tiny_models["llama"], tmp_path / "m", add)
    with pytest.raises(ValueError, match=r"unknown \['model.layers.0.mlp.extra_proj.weight'\]"):
        HFCheckpoint(d).check()


def test_wrong_shape_is_named(tiny_models, tmp_path):
    def shrink(t):
        t["model.layers.0.self_attn.k_proj.weight"] = t["model.layers.0.self_attn.k_proj.weight"][:64]
    d = _copy_with(tiny_models["qwen3"], tmp_path / "m", shrink)
    with pytest.raises(ValueError, match=r"model.layers.0.self_attn.k_proj.weight: \(64, 128\) != \(128, 128\)"):
        HFCheckpoint(d).check()


def test_checkpoint_of_another_family_layout_fails(tiny_models, tmp_path):
    # Qwen2 weights (q/k/v biases, no q/k norms) declared as Qwen3.
    d = tmp_path / "m"
    shutil.copytree(tiny_models["qwen2"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "qwen3", ["Qwen3ForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"qwen3 table.*missing \[.*q_norm.*unknown \[.*q_proj.bias"):
        HFCheckpoint(d).check()


def test_unsupported_model_type_names_it(tiny_models, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_models["llama"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model_type='gpt2'"):
        HFCheckpoint(d)


def test_stream_writer_shards_by_bytes_and_reads_back(tmp_path):
    tensors = {f"t{i}": torch.full((100,), float(i)) for i in range(5)}  # 400 bytes each
    tensors["half"] = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    w = HFStreamWriter(tmp_path, [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()], shard_bytes=1000)
    for k, v in tensors.items():
        w.write(k, v)
    w.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                     "model-00003-of-00003.safetensors"]
    assert index["metadata"]["total_size"] == 2012
    loaded = {}
    for f in files:
        loaded.update(load_file(str(tmp_path / f)))
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in tensors.items())


def test_stream_writer_refuses_out_of_plan_tensors(tmp_path):
    w = HFStreamWriter(tmp_path, [("a", (2,), torch.float32)])
    with pytest.raises(ValueError, match="expected a"):
        w.write("b", torch.zeros(2))
    with pytest.raises(ValueError, match=r"not written: \['a'\]"):
        w.close()


def test_tied_checkpoint_with_an_lm_head_other_than_the_embedding_is_refused(tiny_models, tmp_path):
    # The tiny Qwen3 ties its embeddings: an lm_head.weight of its own would be left unused.
    d = _copy_with(tiny_models["qwen3"], tmp_path / "m",
                   lambda t: t.__setitem__("lm_head.weight", t["model.embed_tokens.weight"] + 1))
    with pytest.raises(ValueError, match=r"unknown \['lm_head.weight'\].*not a copy of the embedding"):
        HFCheckpoint(d).check()


def test_tied_checkpoint_may_carry_an_exact_copy_of_the_embedding(tiny_models, tmp_path):
    d = _copy_with(tiny_models["qwen3"], tmp_path / "m",
                   lambda t: t.__setitem__("lm_head.weight", t["model.embed_tokens.weight"].clone()))
    HFCheckpoint(d).check()


def test_non_weight_buffers_are_not_counted_as_unused(tiny_models, tmp_path):
    d = _copy_with(tiny_models["llama"], tmp_path / "m",
                   lambda t: t.__setitem__("model.layers.0.self_attn.rotary_emb.inv_freq", torch.ones(32)))
    HFCheckpoint(d).check()
