"""The tiny checkpoints: same seed -> same bytes; every tensor random and unlike its neighbours."""
import hashlib
import itertools

import pytest
import torch

from megatron_pacore.checkpoint.hf_io import HFCheckpoint
from megatron_pacore.testing.tiny import make_tiny_model, randomise_parameters


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_same_seed_writes_byte_identical_files(tiny_model, tmp_path):
    again = make_tiny_model(tmp_path / "again", arch="qwen3", seed=0)
    assert _digests(again) == _digests(tiny_model)
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json"} <= set(_digests(again))


def test_another_seed_gives_other_weights(tiny_model, tmp_path):
    other = HFCheckpoint(make_tiny_model(tmp_path / "other", arch="qwen3", seed=1))
    base = HFCheckpoint(tiny_model)
    assert not torch.equal(other.get("model.norm.weight"), base.get("model.norm.weight"))
    assert not torch.equal(other.get("model.embed_tokens.weight"), base.get("model.embed_tokens.weight"))


@pytest.mark.parametrize("arch", ["qwen3", "qwen2", "llama"])
def test_every_tensor_is_random_norms_and_biases_included(tiny_models, arch):
    ck = HFCheckpoint(tiny_models[arch])
    tensors = {n: ck.get(n) for n in ck.names()}
    norms = [n for n in tensors if n.endswith("norm.weight")]
    biases = [n for n in tensors if n.endswith(".bias")]
    assert len(norms) == {"qwen3": 9, "qwen2": 5, "llama": 5}[arch]  # 2 per layer + final (+ q/k)
    assert len(biases) == (6 if arch == "qwen2" else 0)  # q, k, v per layer
    for name, t in tensors.items():
        assert t.dtype == torch.float32, name
        assert t.std().item() > 0.05, f"{name} is (nearly) constant"
    for name in norms:  # positive scales, away from the default 1
        assert 0.5 <= tensors[name].min().item() and tensors[name].max().item() <= 1.5, name
        assert (tensors[name] - 1).abs().mean().item() > 0.1, name
    for name in biases:
        assert tensors[name].abs().mean().item() > 0.03, name
    # No two tensors of one shape are equal (prefix-wise where lengths differ), so a swap shows.
    for a, b in itertools.combinations(tensors, 2):
        if tensors[a].dim() == tensors[b].dim() == 1:
            n = min(len(tensors[a]), len(tensors[b]))
            assert not torch.allclose(tensors[a][:n], tensors[b][:n]), (a, b)
        elif tensors[a].shape == tensors[b].shape:
            assert not torch.allclose(tensors[a], tensors[b]), (a, b)


def test_a_parameter_without_a_drawing_rule_is_refused():
    model = torch.nn.Module()
    model.scale = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="no rule for scale of shape"):
        randomise_parameters(model, seed=0)
