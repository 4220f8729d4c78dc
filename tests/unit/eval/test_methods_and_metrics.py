"""Majority vote, answer normalization and the statistics of the report."""
from __future__ import annotations

import math

import pytest

from megatron_pacore.eval.methods import majority_vote, normalize_answer
from megatron_pacore.eval.metrics import mean_and_stderr
from megatron_pacore.rewards.math import MathVerdict


def right(answer="7"):
    return MathVerdict(1.0, "correct", answer, "boxed")


def wrong(answer):
    return MathVerdict(0.0, "wrong", answer, "boxed")


NONE = MathVerdict(0.0, "no_answer")


def test_majority_of_right_answers_wins():
    assert majority_vote([right(), right("7.0"), wrong("3")]) == 1.0


def test_a_larger_wrong_group_beats_the_right_answer():
    assert majority_vote([right(), wrong("3"), wrong("3"), wrong("5")]) == 0.0


def test_right_answers_in_different_spellings_vote_together():
    # "1/2" and "0.5" are one group because both equal the reference.
    assert majority_vote([right("1/2"), right("0.5"), wrong("3"), wrong(r"\frac{1}{3}")]) == 1.0


def test_wrong_answers_group_by_normalized_spelling():
    assert majority_vote([right(), wrong(r"\dfrac{1}{3}"), wrong(r"\frac{1}{3}")]) == 0.0


def test_ties_give_the_expected_credit_of_a_random_break():
    assert majority_vote([right(), right(), wrong("3"), wrong("3")]) == 0.5
    assert majority_vote([right(), wrong("3"), wrong("4")]) == pytest.approx(1 / 3)
    assert majority_vote([wrong("3"), wrong("4")]) == 0.0


def test_samples_without_an_answer_do_not_vote():
    assert majority_vote([right(), NONE, NONE, NONE]) == 1.0
    assert majority_vote([NONE, NONE]) == 0.0
    assert majority_vote([]) == 0.0


def test_normalize_answer():
    assert normalize_answer(r"\left( 3, \dfrac{\pi}{2} \right).") == r"(3,\frac{\pi}{2})"
    assert normalize_answer(r"\tfrac12") == r"\frac12"


def test_mean_and_standard_error_over_runs():
    mean, se = mean_and_stderr([0.5, 0.75, 1.0])
    assert mean == 0.75
    assert se == pytest.approx(0.25 / math.sqrt(3))
    assert mean_and_stderr([0.4]) == (0.4, None)
