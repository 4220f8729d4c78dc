"""Exact and near-duplicate problems: normalised text, MinHash LSH candidates confirmed by the
shingle Jaccard, the first occurrence kept."""
import pytest

from megatron_pacore.data.dedup import Deduplicator, jaccard, shingles
from megatron_pacore.data.text_norm import normalized, tokens, words

LONG = ("A bag holds 12 red marbles and 8 blue marbles. Two marbles are drawn at random without "
        "replacement. What is the probability that both marbles are red? Express your answer as a "
        "common fraction in lowest terms.")
# One word changed near the end: a near duplicate.
NEAR = LONG.replace("lowest terms", "simplest terms")
# The same template with other numbers and colours: a different problem.
OTHER = ("A bag holds 5 green marbles and 9 yellow marbles. Three marbles are drawn at random with "
         "replacement. What is the probability that all marbles are yellow? Express your answer as a "
         "decimal to the nearest hundredth.")


def test_normalisation_folds_case_spacing_and_unicode_but_keeps_symbols():
    assert normalized("What is 7 + 5?") == normalized("what  is 7+5 ?") == "what is 7 + 5 ?"
    assert normalized("What is 7 * 5?") != normalized("What is 7 + 5?")
    assert normalized("Ｗｈａｔ is 7+5?") == "what is 7 + 5 ?"  # full-width letters, NFKC
    assert tokens("x^2+1") == ["x", "^", "2", "+", "1"]
    assert words("Find $x^2+1$, please!") == ["find", "x", "2", "1", "please"]


def test_shingles_of_short_and_long_texts():
    assert shingles("What is 7 + 5?", 10) == frozenset(["what is 7 + 5 ?"])
    assert shingles("a b c d", 2) == frozenset(["a b", "b c", "c d"])
    assert jaccard(shingles("a b c d", 2), shingles("a b c e", 2)) == pytest.approx(2 / 4)


def test_exact_duplicate_after_normalisation_names_the_first_occurrence():
    d = Deduplicator()
    assert d.check("p1", "What is 7 + 5?") is None
    assert d.check("p2", "What is 7 * 5?") is None  # another operator: another problem
    dup = d.check("p3", "  WHAT is 7+5 ?")
    assert dup is not None and (dup.of, dup.kind, dup.jaccard) == ("p1", "exact", 1.0)


def test_near_duplicate_pair_matches_and_a_different_problem_does_not():
    a, b, c = (shingles(t, 5) for t in (LONG, NEAR, OTHER))
    near_sim, other_sim = jaccard(a, b), jaccard(a, c)
    assert near_sim >= 0.8 > 0.3 > other_sim  # the two pairs are what the test says they are
    d = Deduplicator(jaccard=0.8, shingle_size=5)
    assert d.check("first", LONG) is None
    assert d.check("other", OTHER) is None
    dup = d.check("copy", NEAR)
    assert dup is not None and dup.of == "first" and dup.kind == "near"
    assert dup.jaccard == pytest.approx(near_sim, abs=1e-4)


def test_threshold_is_configurable_and_none_finds_exact_duplicates_only():
    sim = jaccard(shingles(LONG, 5), shingles(NEAR, 5))
    strict = Deduplicator(jaccard=min(1.0, sim + 0.05))
    strict.check("first", LONG)
    assert strict.check("copy", NEAR) is None
    exact_only = Deduplicator(jaccard=None)
    exact_only.check("first", LONG)
    assert exact_only.check("copy", NEAR) is None
    assert exact_only.check("again", LONG.upper()).of == "first"


def test_a_duplicate_is_not_remembered_and_ids_are_checked_once():
    d = Deduplicator()
    d.check("a", LONG)
    assert d.check("b", NEAR).of == "a"
    assert d.check("c", NEAR).of == "a"  # b was dropped, so c duplicates a, not b
    with pytest.raises(ValueError, match="'a' was checked already"):
        d.check("a", OTHER)


@pytest.mark.parametrize("kwargs, message", [
    (dict(jaccard=0.0), "near_duplicate_jaccard must be in"),
    (dict(jaccard=1.5), "near_duplicate_jaccard must be in"),
    (dict(shingle_size=0), "shingle_size must be >= 1"),
    (dict(num_perm=1), "num_perm must be >= 2"),
])
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Deduplicator(**kwargs)


def test_near_copies_just_above_the_threshold_are_not_missed(benchmarks_dir):
    """Real problems (GSM8K) with a short sentence appended: every copy whose shingle Jaccard
    is at or above 0.8 is found (the LSH's tuning; datasketch's default bands missed 5%)."""
    import json

    rows = [json.loads(line) for line in (benchmarks_dir / "gsm8k_test.jsonl").read_text().splitlines()[:300]]
    d = Deduplicator(jaccard=0.8)
    for r in rows:
        assert d.check(r["id"], r["problem"]) is None  # no two of these 300 are near duplicates
    expected = found = 0
    for r in rows:
        copy = r["problem"] + " Show your work."
        sim = jaccard(shingles(copy, 5), shingles(r["problem"], 5))
        dup = d.check("copy-" + r["id"], copy)
        if sim >= 0.8:
            expected += 1
            found += dup is not None and dup.of == r["id"]
        else:
            assert dup is None or dup.of != r["id"]
    assert expected > 250 and found == expected
