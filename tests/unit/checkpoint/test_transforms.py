"""The named special cases of the mapping tables, checked by hand on small tensors."""
import pytest
import torch

from megatron_pacore.checkpoint.mapping import FAMILIES
from megatron_pacore.checkpoint.transforms import (
    Dims, interleave_qkv, pad_vocab, padded_vocab_size, shard, split_qkv, to_global, to_hf, unshard)


def _rule(suffix):
    return next(r for r in FAMILIES["qwen2"].rules if r.megatron.endswith(suffix))


DIMS = Dims(num_heads=4, num_groups=2, head_dim=1, vocab_size=5, padded_vocab_size=8)


def test_qkv_rows_are_grouped_queries_then_key_then_value():
    q = torch.tensor([[10.], [11.], [12.], [13.]])  # heads 0,1 -> group 0; heads 2,3 -> group 1
    k = torch.tensor([[20.], [21.]])
    v = torch.tensor([[30.], [31.]])
    qkv = interleave_qkv(q, k, v, DIMS)
    assert qkv.flatten().tolist() == [10, 11, 20, 30, 12, 13, 21, 31]
    q2, k2, v2 = split_qkv(qkv, DIMS)
    assert torch.equal(q2, q) and torch.equal(k2, k) and torch.equal(v2, v)


def test_qkv_bias_interleaves_like_the_weight():
    q, k, v = torch.arange(4.), torch.arange(2.) + 10, torch.arange(2.) + 20
    assert interleave_qkv(q, k, v, DIMS).tolist() == [0, 1, 10, 20, 2, 3, 11, 21]


def test_qkv_shard_gives_each_tp_rank_whole_query_groups():
    rule = _rule("linear_qkv.weight")
    q = torch.arange(4.).unsqueeze(1)
    full = to_global(rule, [q, q[:2] + 10, q[:2] + 20], DIMS)
    assert shard(rule, full, 2, 1).flatten().tolist() == [2, 3, 11, 21]


def test_fc1_shard_is_gate_slice_then_up_slice():
    rule = _rule("linear_fc1.weight")
    gate = torch.tensor([[1.], [2.], [3.], [4.]])
    up = torch.tensor([[5.], [6.], [7.], [8.]])
    full = to_global(rule, [gate, up], DIMS)
    assert full.flatten().tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    shards = [shard(rule, full, 2, r) for r in range(2)]
    assert shards[0].flatten().tolist() == [1, 2, 5, 6]
    assert shards[1].flatten().tolist() == [3, 4, 7, 8]
    assert torch.equal(unshard(rule, shards), full)
    g, u = to_hf(rule, unshard(rule, shards), DIMS)
    assert torch.equal(g, gate) and torch.equal(u, up)


def test_vocab_is_padded_with_zero_rows_and_trimmed_on_export():
    rule = _rule("word_embeddings.weight")
    emb = torch.arange(10.).reshape(5, 2) + 1
    full = to_global(rule, [emb], DIMS)
    assert full.shape == (8, 2) and full[5:].abs().sum() == 0
    shards = [shard(rule, full, 2, r) for r in range(2)]
    assert [s.shape[0] for s in shards] == [4, 4]
    (back,) = to_hf(rule, unshard(rule, shards), DIMS)
    assert torch.equal(back, emb)


def test_row_parallel_splits_columns():
    rule = _rule("linear_proj.weight")
    w = torch.arange(8.).reshape(2, 4)
    assert shard(rule, w, 2, 1).tolist() == [[2, 3], [6, 7]]


@pytest.mark.parametrize("vocab,tp,expected", [(1002, 1, 1024), (1002, 2, 1024), (1100, 2, 1280),
                                               (151936, 8, 152576), (128256, 4, 128512)])
def test_padded_vocab_is_multiple_of_128_times_tp(vocab, tp, expected):
    assert padded_vocab_size(vocab, tp) == expected


def test_pad_vocab_refuses_a_smaller_padded_size():
    with pytest.raises(ValueError, match="exceeds padded size"):
        pad_vocab(torch.zeros(10, 2), 8)
