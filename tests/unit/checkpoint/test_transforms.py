"""The mapping kinds, checked by hand on small tensors: global shape, from_hf / to_hf, shards."""
import pytest
import torch

from megatron_pacore.checkpoint.mapping import Table
from megatron_pacore.checkpoint.transforms import TensorSource
from megatron_pacore.hf_config import FAMILIES, Dims, padded_vocab_size


def _mapping(suffix):
    return next(m for m in Table.of(FAMILIES["qwen2"], False, 1).mappings if m.megatron.endswith(suffix))


DIMS = Dims(num_heads=4, num_groups=2, head_dim=1, vocab_size=5, padded_vocab_size=8)


def _from_hf(mapping, tensors, out=None):
    names = tuple(f"t{i}" for i in range(len(tensors)))
    return mapping.from_hf(TensorSource(dict(zip(names, tensors))), names, DIMS, out=out)


def _to_hf(mapping, full):
    return mapping.hf_tensors(full, DIMS)


def test_qkv_rows_are_grouped_queries_then_key_then_value():
    m = _mapping("linear_qkv.weight")
    q = torch.tensor([[10.], [11.], [12.], [13.]])  # heads 0,1 -> group 0; heads 2,3 -> group 1
    k = torch.tensor([[20.], [21.]])
    v = torch.tensor([[30.], [31.]])
    qkv = _from_hf(m, [q, k, v])
    assert qkv.flatten().tolist() == [10, 11, 20, 30, 12, 13, 21, 31]
    q2, k2, v2 = _to_hf(m, qkv)
    assert torch.equal(q2, q) and torch.equal(k2, k) and torch.equal(v2, v)
    # The row blocks for the streaming writer are views of the fused tensor, one per group.
    parts = m.to_hf(qkv, DIMS)
    assert [len(p) for p in parts] == [2, 2, 2] and parts[0][0].data_ptr() == qkv.data_ptr()


def test_qkv_bias_interleaves_like_the_weight():
    m = _mapping("linear_qkv.bias")
    q, k, v = torch.arange(4.), torch.arange(2.) + 10, torch.arange(2.) + 20
    assert _from_hf(m, [q, k, v]).tolist() == [0, 1, 10, 20, 2, 3, 11, 21]


def test_qkv_rows_that_do_not_match_the_heads_are_refused():
    m = _mapping("linear_qkv.weight")
    with pytest.raises(ValueError, match="q/k/v rows 4/1/2 do not match heads=4, kv_heads=2, head_dim=1"):
        _from_hf(m, [torch.zeros(4, 1), torch.zeros(1, 1), torch.zeros(2, 1)])


def test_qkv_shard_gives_each_tp_rank_whole_query_groups():
    m = _mapping("linear_qkv.weight")
    q = torch.arange(4.).unsqueeze(1)
    full = _from_hf(m, [q, q[:2] + 10, q[:2] + 20])
    assert m.shard(full, 2, 1).flatten().tolist() == [2, 3, 11, 21]
    assert torch.equal(m.unshard([m.shard(full, 2, r) for r in range(2)]), full)


def test_fc1_shard_is_gate_slice_then_up_slice():
    m = _mapping("linear_fc1.weight")
    gate = torch.tensor([[1.], [2.], [3.], [4.]])
    up = torch.tensor([[5.], [6.], [7.], [8.]])
    full = _from_hf(m, [gate, up])
    assert full.flatten().tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    shards = [m.shard(full, 2, r) for r in range(2)]
    assert shards[0].flatten().tolist() == [1, 2, 5, 6]
    assert shards[1].flatten().tolist() == [3, 4, 7, 8]
    assert torch.equal(m.unshard(shards), full)
    g, u = _to_hf(m, m.unshard(shards))
    assert torch.equal(g, gate) and torch.equal(u, up)


def test_vocab_is_padded_with_zero_rows_and_trimmed_on_export():
    m = _mapping("word_embeddings.weight")
    emb = torch.arange(10.).reshape(5, 2) + 1
    out = torch.full((8, 2), 7.0)  # a reused buffer: the padding rows must be zeroed
    full = _from_hf(m, [emb], out=out)
    assert full.data_ptr() == out.data_ptr()
    assert full.shape == (8, 2) and full[5:].abs().sum() == 0
    shards = [m.shard(full, 2, r) for r in range(2)]
    assert [s.shape[0] for s in shards] == [4, 4]
    (back,) = _to_hf(m, m.unshard(shards))
    assert torch.equal(back, emb)


def test_from_hf_casts_into_a_buffer_of_another_dtype():
    m = _mapping("linear_qkv.weight")
    q, k, v = torch.randn(4, 3), torch.randn(2, 3), torch.randn(2, 3)
    out = torch.empty(8, 3, dtype=torch.bfloat16)
    _from_hf(m, [q, k, v], out=out)
    assert torch.equal(out, _from_hf(m, [q, k, v]).to(torch.bfloat16))


def test_row_parallel_splits_columns():
    m = _mapping("linear_proj.weight")
    w = torch.arange(8.).reshape(2, 4)
    assert m.shard(w, 2, 1).tolist() == [[2, 3], [6, 7]]


@pytest.mark.parametrize("vocab,tp,expected", [(1002, 1, 1024), (1002, 2, 1024), (1100, 2, 1280),
                                               (151936, 8, 152576), (128256, 4, 128512)])
def test_padded_vocab_is_multiple_of_128_times_tp(vocab, tp, expected):
    assert padded_vocab_size(vocab, tp) == expected


def test_vocab_padding_refuses_a_smaller_padded_size():
    m = _mapping("word_embeddings.weight")
    with pytest.raises(ValueError, match="exceeds padded size"):
        m.global_shape([(10, 2)], DIMS)


def _slices(shard):
    """An HFShard's row blocks stacked: the slice it stands for."""
    return torch.cat(shard.parts) if len(shard.parts) > 1 else shard.parts[0]


@pytest.mark.parametrize("tp", [1, 2])
def test_to_hf_shard_gives_each_rank_its_slice_of_every_hf_tensor(tp):
    """Every mapping of a Qwen2 layer (qkv weight and bias, fc1, row-parallel, norms, vocab):
    the rank's Megatron shard, converted without a gather, equals the HF tensor's slice
    [start, stop) along the split axis, and its parts are views of the shard."""
    dims = Dims(num_heads=4, num_groups=2, head_dim=2, vocab_size=5, padded_vocab_size=8)
    gen = torch.Generator().manual_seed(0)
    shapes = {"q": (8, 3), "k": (4, 3), "v": (4, 3), "qb": (8,), "kb": (4,), "vb": (4,), "o": (3, 8),
              "gate": (6, 3), "up": (6, 3), "down": (3, 6), "norm": (3,), "emb": (5, 3)}
    hf = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    names = {"linear_qkv.weight": ("q", "k", "v"), "linear_qkv.bias": ("qb", "kb", "vb"),
             "linear_proj.weight": ("o",), "linear_fc1.weight": ("gate", "up"),
             "linear_fc2.weight": ("down",), "final_layernorm.weight": ("norm",),
             "word_embeddings.weight": ("emb",)}
    for suffix, hf_names in names.items():
        m = _mapping(suffix)
        src = TensorSource({n: hf[n] for n in hf_names})
        full = m.from_hf(src, hf_names, dims)
        for rank in range(tp):
            local = m.shard(full, tp, rank)
            shards = m.to_hf_shard(local, dims, tp, rank)
            assert len(shards) == len(hf_names), suffix
            for n, s in zip(hf_names, shards):
                want = hf[n] if s.axis is None else hf[n].narrow(s.axis, s.start, s.stop - s.start)
                assert torch.equal(_slices(s), want), (suffix, n, rank)
                assert all(p.untyped_storage().data_ptr() == local.untyped_storage().data_ptr()
                           for p in s.parts), (suffix, n)
            if m.tp_axis is None:
                assert all(s.axis is None for s in shards)


def test_to_hf_shard_of_qkv_gives_the_ranks_query_heads_then_its_key_value_heads():
    m = _mapping("linear_qkv.weight")
    q = torch.tensor([[10.], [11.], [12.], [13.]])  # groups: heads 0,1 | 2,3
    full = _from_hf(m, [q, torch.tensor([[20.], [21.]]), torch.tensor([[30.], [31.]])])
    qs, ks, vs = m.to_hf_shard(m.shard(full, 2, 1), DIMS, 2, 1)
    assert (qs.span, _slices(qs).flatten().tolist()) == ((0, 2, 4), [12, 13])
    assert (ks.span, _slices(ks).flatten().tolist()) == ((0, 1, 2), [21])
    assert (vs.span, _slices(vs).flatten().tolist()) == ((0, 1, 2), [31])


def test_to_hf_shard_of_the_vocabulary_clips_the_padding_rows():
    """V = 5 padded to 8 at TP=2: rank 0 holds HF rows 0..3, rank 1 row 4 (and 3 padding rows)."""
    m = _mapping("word_embeddings.weight")
    emb = torch.arange(10.).reshape(5, 2)
    full = _from_hf(m, [emb])
    (s0,), (s1,) = (m.to_hf_shard(m.shard(full, 2, r), DIMS, 2, r) for r in range(2))
    assert s0.span == (0, 0, 4) and torch.equal(_slices(s0), emb[:4])
    assert s1.span == (0, 4, 5) and torch.equal(_slices(s1), emb[4:])
    dims = Dims(num_heads=4, num_groups=2, head_dim=1, vocab_size=3, padded_vocab_size=8)
    (s1,) = m.to_hf_shard(torch.zeros(4, 2), dims, 2, 1)
    assert s1.span == (0, 3, 3) and s1.rows == 0
