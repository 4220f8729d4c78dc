"""The per-rank sync's block handling: which slices reach vLLM's CPU GEMM prepack without a copy."""
import pytest
import torch

from megatron_pacore.types import HFShard
from megatron_pacore.inference.rollout_types import WeightSyncConfig
from megatron_pacore.inference.shard_load import _one_block, _stack


def test_adjacent_row_blocks_of_one_tensor_are_used_as_they_are():
    fc1 = torch.arange(12.).reshape(6, 2)  # [gate_r; up_r]
    gate, up = fc1.chunk(2)
    block = _one_block([HFShard(0, 0, 3, (gate,)), HFShard(0, 0, 3, (up,))], torch.float32)
    assert block.data_ptr() == fc1.data_ptr() and torch.equal(block, fc1)
    single = _one_block([HFShard(1, 2, 4, (fc1,))], torch.float32)
    assert single is fc1


@pytest.mark.parametrize("case", ["gap", "order", "dtype", "other_tensor", "strided"])
def test_anything_else_is_copied(case):
    t = torch.arange(12.).reshape(6, 2)
    parts = {"gap": (t[:2], t[3:]), "order": (t[3:], t[:3]), "dtype": (t,), "other_tensor": (t[:3], t.clone()[3:]),
             "strided": (t.t(),)}[case]
    dtype = torch.bfloat16 if case == "dtype" else torch.float32
    assert _one_block([HFShard(0, 0, 1, parts)], dtype) is None


def test_stack_copies_the_row_blocks_in_order():
    q, k = torch.ones(2, 3), torch.full((1, 3), 2.)
    dest = torch.zeros(3, 3)
    assert _stack(dest, [HFShard(0, 0, 2, (q[:1], q[1:])), HFShard(0, 0, 1, (k,))]) == 3
    assert dest[:, 0].tolist() == [1, 1, 2]


def test_rank_shards_setting_is_checked():
    assert WeightSyncConfig().rank_shards is None
    with pytest.raises(ValueError, match="weight_sync.rank_shards must be true, false or null"):
        WeightSyncConfig(rank_shards="yes")


class _TinyEngineModel(torch.nn.Module):
    """Stands in for a vLLM model: named modules with parameters and a config."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"tie_word_embeddings": False})()
        self.norm = torch.nn.LayerNorm(2)


def test_a_name_without_engine_counterpart_is_each_callers_error():
    from megatron_pacore.inference.rollout_types import WeightMismatchError
    from megatron_pacore.inference.shard_load import RankShardLoader, engine_layout
    from megatron_pacore.inference.weight_check import check_model_weights, engine_module

    model = _TinyEngineModel()
    name, module, param, shard = engine_module(dict(model.named_modules()), "norm.weight", "x")
    assert (name, module, param, shard) == ("norm", model.norm, "weight", None)
    with pytest.raises(ValueError, match=r"per-rank weight sync: lm_head.weight has no engine counterpart "
                                         r"\(lm_head.weight is not in the vLLM model\)"):
        engine_layout(model)("lm_head.weight", (4, 2))
    with pytest.raises(ValueError, match=r"per-rank weight sync: norm.scale has no engine counterpart"):
        engine_layout(model)("norm.scale", (2,))
    with pytest.raises(ValueError, match=r"per-rank weight sync: lm_head.weight has no engine counterpart"):
        RankShardLoader(model).feed("lm_head.weight", HFShard(0, 0, 4, (torch.zeros(4, 2),)))
    with pytest.raises(WeightMismatchError, match=r"check_weights: lm_head.weight has no engine counterpart"):
        check_model_weights(model, [("lm_head.weight", torch.zeros(4, 2))])
