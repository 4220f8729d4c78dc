import random

import pytest

from megatron_pacore.pacore.ordering import reference_order


def test_released_order_is_length_sort_then_seeded_shuffle():
    texts = ["ccc", "a", "bbbbb", "dd"]
    by_len = [1, 3, 0, 2]
    expected = list(by_len)
    random.Random(42).shuffle(expected)
    assert reference_order(texts) == expected


def test_released_order_independent_of_arrival_order():
    texts = ["x" * n for n in (5, 1, 9, 3, 7, 2)]
    order = [texts[i] for i in reference_order(texts)]
    shuffled = texts[::-1]
    assert [shuffled[i] for i in reference_order(shuffled)] == order


def test_released_order_is_a_permutation_and_stable_on_ties():
    texts = ["aa", "bb", "c", "dd"]
    order = reference_order(texts)
    assert sorted(order) == [0, 1, 2, 3]
    # equal lengths keep input order before the shuffle: [2, 0, 1, 3] shuffled by Random(42)
    expected = [2, 0, 1, 3]
    random.Random(42).shuffle(expected)
    assert order == expected


def test_random_order_is_seeded_per_key():
    texts = [str(i) for i in range(10)]
    a = reference_order(texts, "random", seed=1, key="p1/1")
    assert a == reference_order(texts, "random", seed=1, key="p1/1")
    assert a != reference_order(texts, "random", seed=1, key="p2/1")
    assert sorted(a) == list(range(10))


def test_unknown_order_mode():
    with pytest.raises(ValueError, match="released"):
        reference_order(["a"], "alphabetical")
