"""Single-process conversion: round trip, bf16, sharded export, and errors that name the problem.

The CLI tests call `tools/convert_hf.py`'s `main` in-process, loaded from its file (tools/ is
not a package and is not put on sys.path).
"""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from megatron_pacore.checkpoint.convert import hf_to_megatron, megatron_to_hf
from megatron_pacore.checkpoint.dist import read_info
from megatron_pacore.checkpoint.hf_io import HFCheckpoint


def _load_tool(name: str):
    path = Path(__file__).resolve().parents[3] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_main = _load_tool("convert_hf").main


def _tensors(d):
    ck = HFCheckpoint(d)
    return {n: ck.get(n) for n in ck.names()}


def _transformers_logits(d, ids, dtype=torch.float32):
    """fp32 eval-mode logits [b, s, V] of the checkpoint in `d` as `transformers` loads it, its
    weights first stored in `dtype` (bf16 rounds them as the converter does); fails if any
    weight was missing from or unexpected in the checkpoint (transformers only warns)."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, output_loading_info=True)
    assert not any(info.values()), info
    model = model.float().eval()
    with torch.no_grad():
        return model(ids).logits


def _ids(d):
    vocab = json.loads((Path(d) / "config.json").read_text())["vocab_size"]
    return torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(0))


def test_round_trip_through_the_cli_is_bit_identical(tiny_models, tmp_path):
    src = tiny_models["qwen2"]
    assert convert_main(["--hf", str(src), "--out", str(tmp_path / "m"), "--tp", "2", "--no-progress"]) == 0
    assert convert_main(["--to-hf", "--megatron", str(tmp_path / "m"), "--out", str(tmp_path / "hf"),
                         "--no-progress"]) == 0
    a, b = _tensors(src), _tensors(tmp_path / "hf")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "hf" / "tokenizer.json").is_file() and (tmp_path / "hf" / "config.json").is_file()
    # The exported config builds the same model: equal tensors give equal logits.
    ids = _ids(src)
    assert torch.equal(_transformers_logits(tmp_path / "hf", ids), _transformers_logits(src, ids))


def test_checkpoint_records_family_and_padding_for_tp(tiny_models, tmp_path):
    info = hf_to_megatron(tiny_models["llama"], tmp_path / "m", tp=2, pp=2)
    assert (info.family, info.padded_vocab_size, info.tp, info.pp) == ("llama", 1024, 2, 2)
    assert read_info(tmp_path / "m") == info
    assert json.loads((tmp_path / "m" / "metadata.json").read_text())["sharded_backend"] == "torch_dist"


def test_bf16_conversion_and_sharded_export(tiny_models, tmp_path):
    hf_to_megatron(tiny_models["qwen3"], tmp_path / "m", dtype="bf16")
    megatron_to_hf(tmp_path / "m", tmp_path / "hf", shard_bytes=300_000)
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    src = _tensors(tiny_models["qwen3"])
    out = _tensors(tmp_path / "hf")
    assert all(t.dtype == torch.bfloat16 for t in out.values())
    assert all(torch.equal(out[k], src[k].to(torch.bfloat16)) for k in src)
    # transformers loads the sharded export (tied, so without an lm_head of its own) as the
    # source model with its weights rounded to bf16: the same logits, computed in fp32.
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["tie_word_embeddings"] is True
    ids = _ids(tiny_models["qwen3"])
    exported = _transformers_logits(tmp_path / "hf", ids)
    source = _transformers_logits(tiny_models["qwen3"], ids, dtype=torch.bfloat16)
    assert (exported - source).abs().max().item() <= 1e-6
    # ... and bf16 rounding moved them measurably off the fp32 source (the check can fail).
    assert (exported - _transformers_logits(tiny_models["qwen3"], ids)).abs().max().item() > 1e-4


def test_tp_that_does_not_divide_kv_heads_is_an_error(tiny_models, tmp_path, capsys):
    assert convert_main(["--hf", str(tiny_models["qwen3"]), "--out", str(tmp_path / "m"), "--tp", "4"]) == 2
    assert "--tp 4 must divide num_key_value_heads=2" in capsys.readouterr().err


def test_missing_tensor_is_named_by_the_cli(tiny_models, tmp_path, capsys):
    d = tmp_path / "broken"
    shutil.copytree(tiny_models["llama"], d)
    from safetensors.torch import save_file
    t = load_file(str(d / "model.safetensors"))
    t.pop("model.norm.weight")
    save_file(t, str(d / "model.safetensors"))
    assert convert_main(["--hf", str(d), "--out", str(tmp_path / "m")]) == 2
    assert "missing ['model.norm.weight']" in capsys.readouterr().err


def test_export_of_a_directory_that_is_not_a_checkpoint_is_an_error(tiny_models, tmp_path, capsys):
    assert convert_main(["--to-hf", "--megatron", str(tiny_models["qwen3"]), "--out", str(tmp_path / "x")]) == 2
    assert "megatron_pacore.json" in capsys.readouterr().err


def test_export_refuses_a_checkpoint_whose_shapes_differ_from_its_config(tiny_models, tmp_path):
    hf_to_megatron(tiny_models["qwen3"], tmp_path / "m")
    cfg_path = tmp_path / "m" / "hf" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["intermediate_size"] = 192
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"linear_fc1.weight: \(2, 512, 128\) != \(2, 384, 128\)"):
        megatron_to_hf(tmp_path / "m", tmp_path / "hf")


def test_megatron_reads_the_format_files_the_converter_writes(tiny_models, tmp_path):
    from megatron.core.dist_checkpointing.core import maybe_load_config
    from megatron.core.dist_checkpointing.strategies.common import COMMON_STATE_FNAME, TorchCommonLoadStrategy

    hf_to_megatron(tiny_models["qwen2"], tmp_path / "m")
    cfg = maybe_load_config(str(tmp_path / "m"))
    assert (cfg.sharded_backend, cfg.common_backend) == ("torch_dist", "torch")
    assert (tmp_path / "m" / COMMON_STATE_FNAME).is_file()
    assert TorchCommonLoadStrategy().load_common(tmp_path / "m") == {}
