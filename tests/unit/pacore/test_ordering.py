"""The released reference order, pinned literally (Random(42) permutations computed once by
hand from the release's algorithm; a change of algorithm must show up here)."""
import pytest

from megatron_pacore.pacore.ordering import reference_order


def test_released_order_is_length_sort_then_seeded_shuffle():
    # sorted by length: [1, 3, 0, 2]; Random(42).shuffle permutes positions as [2, 1, 3, 0]
    assert reference_order(["ccc", "a", "bbbbb", "dd"]) == [0, 3, 2, 1]


def test_released_order_of_six_distinct_lengths():
    texts = ["x" * n for n in (5, 1, 9, 3, 7, 2)]
    assert reference_order(texts) == [0, 5, 3, 4, 1, 2]
    # the same multiset in reverse arrival order places the same texts in the same slots
    shuffled = texts[::-1]
    assert [shuffled[i] for i in reference_order(shuffled)] == [texts[i] for i in [0, 5, 3, 4, 1, 2]]


def test_released_order_keeps_input_order_among_equal_lengths():
    # "aa", "bb", "dd" tie: the stable sort gives [2, 0, 1, 3], then the shuffle
    assert reference_order(["aa", "bb", "c", "dd"]) == [1, 0, 3, 2]
    # swapping two tied texts swaps their slots: ties follow the sample index
    assert reference_order(["bb", "aa", "c", "dd"]) == [1, 0, 3, 2]


def test_released_order_shuffles_all_k_then_drops_failed_and_empty():
    # sample 1 failed (text ""), sample 4 empty: all six are permuted, then both dropped
    texts = ["ccc", "", "a", "bbbbb", "", "dd"]
    keep = [True, False, True, True, False, True]
    assert reference_order(texts) == [5, 4, 2, 0, 1, 3]
    assert reference_order(texts, keep=keep) == [5, 2, 0, 3]


def test_keep_must_match_texts():
    with pytest.raises(ValueError, match="keep has 2 entries for 3 texts"):
        reference_order(["a", "b", "c"], keep=[True, False])


def test_random_order_is_seeded_per_key():
    texts = [str(i) for i in range(10)]
    a = reference_order(texts, "random", seed=1, key="p1/1")
    assert a == reference_order(texts, "random", seed=1, key="p1/1")
    assert a != reference_order(texts, "random", seed=1, key="p2/1")
    assert sorted(a) == list(range(10))
    assert reference_order(texts, "random", seed=1, key="p1/1", keep=[i % 2 == 0 for i in range(10)]) == \
        [i for i in a if i % 2 == 0]


def test_unknown_order_mode():
    with pytest.raises(ValueError, match="released"):
        reference_order(["a"], "alphabetical")
