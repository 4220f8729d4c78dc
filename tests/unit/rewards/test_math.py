"""The math grader: extraction, math-verify equivalence, near misses, and its own timeout."""
from __future__ import annotations

import json
import random
import time

import pytest

from megatron_pacore.pacore.compaction import compact
from megatron_pacore.rewards.math import MathGrader, MathVerdict, extract_answer, last_boxed, score_math, score_math_batch

HMMT_ROOTS = r"\frac{-1+\sqrt{17}}{2}, \frac{-1-\sqrt{17}}{2}"


@pytest.fixture(scope="module")
def grader():
    with MathGrader(workers=2, timeout_s=10.0) as g:
        yield g


def _answers(benchmarks_dir, name: str) -> list[str]:
    with open(benchmarks_dir / f"{name}.jsonl") as f:
        return [json.loads(line)["answer"] for line in f]


# -- extraction -----------------------------------------------------------------------------


def test_last_boxed_takes_the_last_complete_box_with_nested_braces():
    text = r"First \boxed{1}. Later: $\boxed{\frac{1}{\sqrt{2}}}$ is it."
    assert last_boxed(text) == r"\frac{1}{\sqrt{2}}"


def test_unterminated_last_box_falls_back_to_previous_complete_box():
    assert last_boxed(r"so \boxed{42}. Wait, maybe \boxed{\frac{1}{2") == "42"


def test_adjacent_boxes_join_into_one_list_answer():
    assert last_boxed(r"The roots are \boxed{2} and \boxed{-3}.") == "2, -3"
    # Boxes separated by prose are separate answers: only the last counts.
    assert last_boxed(r"\boxed{2} is wrong, the right value is \boxed{5}") == "5"


def test_fbox_and_escaped_braces():
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"


def test_answer_phrase_fallbacks_strip_markup():
    assert extract_answer("The final answer is $42$.") == ("42", "phrase")
    assert extract_answer(r"**Answer:** \(\frac{1}{2}\)") == (r"\frac{1}{2}", "phrase")
    assert extract_answer("so she pays 18 dollars.\n#### 18") == ("18", "phrase")
    assert extract_answer("no conclusion here") == (None, None)


# -- every shipped reference, in its own form -----------------------------------------------


@pytest.mark.parametrize("name", ["aime24", "aime25", "hmmt25"])
def test_every_reference_is_accepted_boxed_in_its_own_form(grader, benchmarks_dir, name):
    refs = _answers(benchmarks_dir, name)
    assert len(refs) == 30
    verdicts = grader.grade([f"Therefore the answer is $\\boxed{{{r}}}$." for r in refs], refs)
    rejected = [(r, v.reason) for r, v in zip(refs, verdicts) if v.score != 1.0]
    assert rejected == []


@pytest.mark.parametrize("name,rows", [("math500", 500), ("gsm8k_test", 1319)])
def test_every_math500_and_gsm8k_reference_is_accepted_boxed(grader, benchmarks_dir, name, rows):
    refs = _answers(benchmarks_dir, name)
    assert len(refs) == rows
    verdicts = grader.grade([f"\\boxed{{{r}}}" for r in refs], refs)
    assert [r for r, v in zip(refs, verdicts) if v.score != 1.0] == []


def test_math500_references_in_an_answer_phrase_are_accepted(grader, benchmarks_dir):
    refs = random.Random(0).sample(_answers(benchmarks_dir, "math500"), 100)
    verdicts = grader.grade([f"The final answer is ${r}$." for r in refs], refs)
    assert [r for r, v in zip(refs, verdicts) if v.score != 1.0] == []


def test_references_are_not_accepted_for_a_neighbouring_problem(grader, benchmarks_dir):
    """Grading each boxed answer against the NEXT problem's reference must fail (except where
    two problems share an answer), so acceptance above is not vacuous."""
    refs = _answers(benchmarks_dir, "hmmt25") + _answers(benchmarks_dir, "aime25")
    shifted = refs[1:] + refs[:1]
    verdicts = grader.grade([f"\\boxed{{{r}}}" for r in refs], shifted)
    accepted = [(r, s) for r, s, v in zip(refs, shifted, verdicts) if v.score == 1.0]
    assert accepted == [(r, s) for r, s in zip(refs, shifted) if r == s]


# -- equivalent forms and near misses --------------------------------------------------------

EQUIVALENT = [
    (r"\dfrac{1}{576}", r"\frac{1}{576}"),
    ("1/576", r"\frac{1}{576}"),
    (r"\frac12", "0.5"),
    ("0.5", r"\frac12"),
    (r"\frac{-1-\sqrt{17}}{2}, \frac{-1+\sqrt{17}}{2}", HMMT_ROOTS),
    (r"x = \frac{-1-\sqrt{17}}{2} \text{ or } x = \frac{-1+\sqrt{17}}{2}", HMMT_ROOTS),
    (r"\frac{-1\pm\sqrt{17}}{2}", HMMT_ROOTS),
    (r"2^{25} \cdot 26!", r"2^{25} \cdot 26!"),
    (r"26! \cdot 2^{25}", r"2^{25} \cdot 26!"),
    (r"2^{25} \times 26!", r"2^{25} \cdot 26!"),
    (r"33554432 \cdot 26!", r"2^{25} \cdot 26!"),
    (r"\frac{9}{\sqrt{23}}", r"\frac{9 \sqrt{23}}{23}"),
    (r"\frac{\pi-2}{\pi}", r"1-\frac{2}{\pi}"),
    (r"\sqrt{640}", r"8\sqrt{10}"),
    (r"-2\sqrt{3}+\sqrt{23}", r"\sqrt{23}-2 \sqrt{3}"),
    (r"2(7+2\sqrt{37})", r"14+4\sqrt{37}"),
    (r"\frac{\sqrt{570}}{12}", r"\sqrt{\frac{95}{24}}"),
    ("2025/101", r"\frac{2025}{101}"),
    ("1,037", "1037"),
    ("103.0", "103"),
]

NEAR_MISSES = [
    (r"1+\frac{2}{\pi}", r"1-\frac{2}{\pi}"),
    (r"\frac{-1+\sqrt{17}}{2}, \frac{1-\sqrt{17}}{2}", HMMT_ROOTS),  # a wrong root
    (r"\frac{-1+\sqrt{17}}{2}", HMMT_ROOTS),  # one root missing
    (r"26!", r"2^{25} \cdot 26!"),  # a missing factor
    (r"2^{24} \cdot 26!", r"2^{25} \cdot 26!"),
    (r"\sqrt{23}+2\sqrt{3}", r"\sqrt{23}-2 \sqrt{3}"),
    (r"\frac{95}{24}", r"\sqrt{\frac{95}{24}}"),
    (r"\frac{1}{577}", r"\frac{1}{576}"),
    ("0.39", r"\frac{7}{18}"),
    ("-983", "-984"),
]


@pytest.mark.parametrize("answer,reference", EQUIVALENT)
def test_equivalent_forms_are_accepted(grader, answer, reference):
    [v] = grader.grade([f"Thus $\\boxed{{{answer}}}$"], [reference])
    assert (v.score, v.reason, v.extracted) == (1.0, "correct", answer)


@pytest.mark.parametrize("answer,reference", NEAR_MISSES)
def test_near_misses_are_rejected(grader, answer, reference):
    [v] = grader.grade([f"Thus $\\boxed{{{answer}}}$"], [reference])
    assert (v.score, v.reason) == (0.0, "wrong")


def test_phrase_and_fallback_answers_are_graded(grader):
    verdicts = grader.grade(
        ["The final answer is $\\frac{1}{2}$.", "We get 1/2, hence the result is $\\frac{1}{3}$", "nothing"],
        ["0.5", r"\frac13", "7"],
    )
    assert [(v.score, v.method) for v in verdicts] == [(1.0, "phrase"), (1.0, "fallback"), (0.0, None)]
    assert verdicts[2].reason == "no_answer"


def test_last_box_decides_even_when_an_earlier_box_is_right(grader):
    [v] = grader.grade([r"first guess \boxed{70}, but on reflection \boxed{71}"], ["70"])
    assert v.score == 0.0 and v.extracted == "71"


# -- timeout and robustness -------------------------------------------------------------------


def test_pathological_input_times_out_without_hanging_the_caller():
    with MathGrader(workers=1, timeout_s=1.0) as g:
        start = time.monotonic()
        verdicts = g.grade([r"\boxed{9^{9^{9^{9^{9}}}}}", r"\boxed{3}"], ["1", "3"])
        elapsed = time.monotonic() - start
        assert [(v.score, v.reason) for v in verdicts] == [(0.0, "timeout"), (1.0, "correct")]
        assert elapsed < 6.0
        assert g.pool.restarts == 1
        # The replaced worker serves the next batch.
        assert g.scores([r"\boxed{\frac{1}{2}}"], ["0.5"]) == [1.0]


def test_bad_inputs_are_user_errors_or_zero_scores(grader):
    with pytest.raises(ValueError, match="same length"):
        grader.grade(["a"], ["1", "2"])
    with pytest.raises(ValueError, match="reference 0"):
        grader.grade(["a"], [""])
    [v] = grader.grade([r"\boxed{1}"], [r"\text{}"])
    assert v.score == 0.0 and v.reason.startswith("error: reference")
    [v] = grader.grade(["x" * 200_000 + r"\boxed{" * 5000], ["1"])
    assert v.score == 0.0


def test_module_level_functions_use_a_shared_pool():
    assert score_math(r"<think>w</think>so \boxed{\dfrac{1}{576}}", r"\frac{1}{576}") == 1.0
    assert score_math_batch([r"</think>\boxed{2}", r"</think>\boxed{3}"], ["2", "2"]) == [1.0, 0.0]
    assert score_math(r"so \boxed{\dfrac{1}{576}}", r"\frac{1}{576}", strict=False) == 1.0


# -- strict mode (training rewards): each false positive of the lenient grader scores 0 ----

_PAD = "We double-check each case carefully without numbers. " * 12


@pytest.fixture(scope="module")
def strict():
    with MathGrader(workers=1, strict=True) as g:
        yield g


def test_strict_truncated_trajectory_is_not_graded_by_its_last_number(strict, grader):
    cut = "<think>Let me compute. So x = 12, then adding 3 gives 15"  # max_tokens hit mid-thought
    assert grader.grade([cut], ["15"])[0].score == 1.0  # lenient: the fallback pays the last number
    assert strict.grade([cut], ["15"])[0] == MathVerdict(0.0, "unfinished_thinking")
    assert score_math(cut, "15") == 0.0  # strict is score_math's default


def test_strict_length_finish_scores_zero_even_with_a_box(strict):
    done = r"<think>ok</think>So the total is \boxed{15}"
    assert strict.grade([done, done], ["15", "15"], ["length", "stop"]) == [
        MathVerdict(0.0, "truncated"), MathVerdict(1.0, "correct", "15", "boxed")]
    assert score_math(done, "15", finish_reason="length") == 0.0


def test_strict_hedged_answers_score_zero(strict, grader):
    hedged = "<think>ok</think>It is either 12 or 15."
    assert grader.grade([compact(hedged)], ["15"])[0].score == 1.0  # lenient fallback
    assert strict.grade([hedged], ["15"])[0] == MathVerdict(0.0, "no_answer")
    two_boxes = r"<think>ok</think>It is \boxed{12} or \boxed{15}."
    assert [v.score for v in strict.grade([two_boxes] * 2, ["12", "15"])] == [0.0, 1.0]  # the last box only


def test_answer_phrase_counts_only_on_the_final_line(strict, grader):
    middle = "Suppose the answer is 7. " + _PAD + "\nSo that cannot be."
    assert extract_answer(middle) == (None, None)
    assert grader.grade([middle], ["7"])[0].score == 0.0
    assert extract_answer("Checked twice.\nThe answer is 7.\n\n") == ("7", "phrase")
    assert strict.grade(["<think>t</think>" + middle], ["7"])[0].score == 0.0
    assert strict.grade(["<think>t</think>The answer is 7."], ["7"])[0].reason == "no_answer"  # strict: box only


def test_strict_ignores_boxes_inside_the_thinking(strict):
    assert strict.grade([r"<think>\boxed{15}</think>I am not sure."], ["15"])[0].score == 0.0
    assert strict.grade([r"<think>\boxed{12}</think>Final: \boxed{15}"], ["15"])[0].score == 1.0


def test_grader_mode_and_finish_reason_checks(strict, grader):
    assert (strict.mode, grader.mode) == ("strict", "lenient")
    with pytest.raises(ValueError, match="finish_reasons has 1 entries for 2 responses"):
        strict.grade(["a", "b"], ["1", "2"], ["stop"])



def test_grading_workers_have_a_memory_cap():
    """A blow-up fails the item with MemoryError in the worker instead of exhausting the host."""
    from megatron_pacore.rewards.pool import TimeoutPool

    with TimeoutPool("builtins:bytearray", workers=1, timeout_s=20,
                     initializer="megatron_pacore.rewards.math:_init_worker") as pool:
        [out] = pool.map([(5 << 30,)])
        assert out.error is not None and out.error.startswith("exception: MemoryError")
        assert pool.map([(3,)])[0].value == bytearray(3)


def test_integer_answers_are_compared_by_value(strict, grader):
    cases = [(r"</think>\boxed{042}", "42", 1.0), (r"</think>\boxed{-7}", "-7", 1.0), (r"</think>\boxed{7}", "-7", 0.0),
             (r"</think>\boxed{\frac{84}{2}}", "42", 1.0), (r"</think>\boxed{41}", "42", 0.0)]
    verdicts = strict.grade([c for c, _, _ in cases], [r for _, r, _ in cases])
    assert [v.score for v in verdicts] == [s for _, _, s in cases]
    assert [v.reason for v in verdicts] == ["correct", "correct", "wrong", "correct", "wrong"]
