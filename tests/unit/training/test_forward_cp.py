"""Context-parallel sequence layout: load-balanced split and its inverse, label alignment."""
import pytest
import torch

from megatron_pacore.training.forward import MicroBatch, cp_merge, cp_split


def test_cp_split_gives_each_rank_a_front_and_a_back_chunk():
    x = torch.arange(8).unsqueeze(0)  # s = 8, cp = 2 -> 4 chunks of 2
    assert cp_split(x, 2, 0).tolist() == [[0, 1, 6, 7]]
    assert cp_split(x, 2, 1).tolist() == [[2, 3, 4, 5]]


def test_cp_merge_inverts_split_for_any_cp():
    x = torch.arange(2 * 24).reshape(2, 24)
    for cp in (1, 2, 3, 4):
        assert torch.equal(cp_merge([cp_split(x, cp, r) for r in range(cp)]), x)


def test_cp_split_refuses_lengths_not_divisible_by_2cp():
    with pytest.raises(ValueError, match="divisible by 2 \\* parallel.cp = 4"):
        cp_split(torch.zeros(1, 6), 2, 0)


def test_labels_are_next_tokens_so_split_parts_keep_their_targets():
    mb = MicroBatch(torch.tensor([[5, 6, 7, 8]]))
    assert mb.next_tokens().tolist() == [[6, 7, 8, 0]]
    # After a CP split, each rank's labels still name the token after each of its positions.
    assert cp_split(mb.next_tokens(), 2, 0).tolist() == [[6, 0]]
    assert cp_split(mb.input_ids, 2, 0).tolist() == [[5, 8]]
