"""The math grader's fast paths give math-verify's verdicts, only sooner.

math_exact.py compares plain numbers exactly without parsing; math_speedups.py makes three of
math-verify's hot spots cheap. Each is checked against math-verify itself: on every pair the
fast path decides, its verdict is math-verify's; with the speed-ups in or out, the parses and
verdicts are identical; and anything that only looks numeric falls back.
"""
from __future__ import annotations

import logging
import random
from fractions import Fraction

import pytest

from megatron_pacore.rewards import math_speedups
from megatron_pacore.rewards.math import MathGrader, grade_one
from megatron_pacore.rewards.math_exact import ExactNumber, compare_exact, exact_value

logging.getLogger("math_verify").setLevel(logging.ERROR)


def math_verify_verdict(answer: str, reference: str) -> bool:
    from math_verify import parse, verify

    return verify(parse(f"${reference}$", parsing_timeout=None), parse(f"${answer}$", parsing_timeout=None),
                  timeout_seconds=None)


# -- reading plain numbers -------------------------------------------------------------------

@pytest.mark.parametrize("text,value,decimal", [
    ("42", 42, False), ("007", 7, False), ("-7", -7, False), ("+5", 5, False), ("- 5", -5, False),
    ("-0", 0, False), ("$12$", 12, False), (" $ -3 $ ", -3, False),
    ("1,000", 1000, False), ("12,345,678", 12345678, False),
    ("3.0", 3, True), ("0.50", Fraction(1, 2), True), (".5", Fraction(1, 2), True), ("3.", 3, True),
    ("-2.25", Fraction(-9, 4), True),
    ("1/2", Fraction(1, 2), False), ("2025/101", Fraction(2025, 101), False), ("6/4", Fraction(3, 2), False),
    (r"\frac{1}{2}", Fraction(1, 2), False), (r"\dfrac{84}{2}", 42, False), (r"\tfrac{3}{9}", Fraction(1, 3), False),
    (r"-\frac{1}{2}", Fraction(-1, 2), False), (r"\frac{-1}{2}", Fraction(-1, 2), False),
    (r"-\frac{-1}{2}", Fraction(1, 2), False), (r"\frac{ 3 }{ 4 }", Fraction(3, 4), False),
])
def test_plain_numbers_are_read_exactly(text, value, decimal):
    assert exact_value(text) == ExactNumber(Fraction(value), decimal)


@pytest.mark.parametrize("text", [
    "12,34", "1,2", "0,500", "1,000.5", "1 000", r"1\,000", "1{,}000",  # lists, decimal commas, spacing
    "--5", "+-5", "−5", "٣", "１２",  # double signs, a Unicode minus, non-ASCII digits
    "1e3", "0x10", "10_000", "1.2.3", "1/2/3", "2^{3}", "10!", r"\sqrt{4}", "5\\%", r"5 \text{ cm}",
    r"\text{5}", r"\frac12", r"\frac{1}{0}", "1/0", r"2\frac{1}{2}", r"\frac{1.5}{2}", "x=5", "(5)", "$5",
    "5$$", "", " ", "1" * 101,
])
def test_anything_else_is_not_read(text):
    assert exact_value(text) is None


def test_unequal_values_are_decided_only_without_decimals():
    assert compare_exact("41", "42") is False
    assert compare_exact(r"\frac{1}{577}", r"\frac{1}{576}") is False
    assert compare_exact("0.3333", r"\frac{1}{3}") is None  # math-verify's 6-place rounding decides
    assert compare_exact("0.5", r"\frac{1}{2}") is True
    assert compare_exact(r"5 \text{ cm}", "5") is None


# -- agreeing with math-verify ---------------------------------------------------------------

AGREEMENT = [
    ("042", "42"), ("-0", "0"), ("+5", "5"), ("3.0", "3"), ("3.", "3"), ("1000.000", "1000"), ("00", "0"),
    ("1,000", "1000"), ("1000", "1,000"), ("1,234", "1234"), ("1,037", "1038"),
    (".5", r"\frac{1}{2}"), ("0.50", r"\frac{1}{2}"), ("1/2", r"\frac{1}{2}"), (r"\dfrac{2}{4}", r"\frac{1}{2}"),
    (r"\frac{-1}{2}", r"-\frac{1}{2}"), ("-1/2", r"\frac{-1}{2}"), (r"\frac{3}{1}", "3"), ("3/1", "3"),
    (r"\frac{1}{1000001}", r"\frac{1}{1000002}"), (r"\frac{84}{2}", "42"), ("-983", "-984"), ("7", "-7"),
    (r"\frac{7}{18}", "0.3888888888"), ("0.25", r"\frac{1}{4}"), ("2.5", r"\frac{5}{2}"), ("1/3", r"\frac{2}{6}"),
]


@pytest.mark.parametrize("answer,reference", AGREEMENT)
def test_every_exact_verdict_is_math_verifys(answer, reference):
    fast = compare_exact(answer, reference)
    if fast is not None:
        assert fast == math_verify_verdict(answer, reference)


def test_exact_verdicts_agree_with_math_verify_on_random_plain_numbers():
    rng = random.Random(0)

    def plain(value: Fraction) -> str:
        form = rng.randrange(5)
        if form == 0 and value.denominator == 1:
            return str(value.numerator)
        if form == 1 and value.denominator == 1 and value >= 1000:
            return f"{value.numerator:,}"
        if form == 2 and value.denominator in (1, 2, 4, 5, 8):
            return str(float(value))
        if form == 3:
            return f"{value.numerator * 2}/{value.denominator * 2}"
        sign = "-" if value < 0 else ""
        return rf"{sign}\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"

    decided = 0
    for _ in range(150):
        ref = Fraction(rng.randrange(-3000, 3000), rng.choice([1, 1, 2, 3, 4, 5, 8, 7]))
        ans = ref if rng.random() < 0.5 else ref + Fraction(rng.choice([-1, 1]), rng.choice([1, 2, 3]))
        a, r = plain(ans), plain(ref)
        fast = compare_exact(a, r)
        if fast is None:  # every form above is read; only unequal values with a decimal are left
            assert exact_value(a) and exact_value(r) and "." in a + r and a != r, (a, r)
            continue
        decided += 1
        assert fast == math_verify_verdict(a, r), (a, r)
    assert decided >= 120


@pytest.mark.parametrize("answer,reference,score", [
    ("042", "42", 1.0), ("1,000", "1000", 1.0), ("3.0", "3", 1.0), (r"\dfrac{1}{2}", "0.5", 1.0),
    (r"\frac{2}{4}", r"\frac{1}{2}", 1.0), ("1/3", r"\frac{1}{3}", 1.0), (r"\frac{1}{3}", "1/4", 0.0),
    ("0.333333", r"\frac{1}{3}", 1.0),  # math-verify's tolerance on decimals, kept
    ("0.3333", r"\frac{1}{3}", 0.0),
    # Fall back to math-verify, which decides as before:
    (r"2^{3}", "8", 1.0), (r"5 \text{ cm}", "5", 1.0), ("12,34", "1234", 0.0), ("1e3", "1000", 0.0),
    ("٣", "3", 0.0), ("1/2/3", r"\frac{1}{6}", 1.0), (r"\frac{1}{0}", "1", 0.0), ("x = 5", "5", 1.0),
])
def test_grading_plain_and_look_alike_answers(answer, reference, score):
    verdict = grade_one(f"reasoning</think>So $\\boxed{{{answer}}}$.", reference, strict=True)
    assert verdict.score == score, verdict
    assert verdict.score == float(math_verify_verdict(answer, reference))


def test_a_box_that_only_looks_numeric_is_not_taken_at_face_value():
    """`\\boxed{4}2` style tricks and boxed expressions: only the box's own content counts, and
    an expression in it is parsed, not read as its first digits."""
    assert grade_one(r"</think>\boxed{4}2", "42", strict=True).score == 0.0
    assert grade_one(r"</think>\boxed{42 - 1}", "42", strict=True).score == 0.0
    assert grade_one(r"</think>\boxed{40 + 2}", "42", strict=True).score == 1.0
    assert grade_one(r"</think>\boxed{4,2}", "42", strict=True).score == 0.0


# -- the speed-ups change nothing but time ---------------------------------------------------


def test_numbers_are_built_as_sympy_builds_them():
    import sympy

    number = math_speedups.make_number(getattr(sympy.Number, "__wrapped__", sympy.Number))
    for s in ["0", "7", "123", "00", "1" * 120, "3.", ".5", "1.50", "0.000", "000.5", "10.",
              "1.2345678901234567890123", "123456789.1234567", "0.0000001"]:
        ours, theirs = number(s), sympy.Number(s)
        assert (sympy.srepr(ours), type(ours), getattr(ours, "_prec", None)) == \
               (sympy.srepr(theirs), type(theirs), getattr(theirs, "_prec", None)), s
    with pytest.raises(sympy.SympifyError):  # sympy's own error, kept
        number("0123")
    assert number(5) == 5 and number(1, 2) == sympy.Rational(1, 2)


def test_numeric_shortcut_proves_only_real_differences():
    import sympy

    x = sympy.Symbol("x")
    s13, s14 = sympy.sqrt(13), sympy.sqrt(14)
    assert math_speedups.provably_different(1000 * s13, 1000 * s14)
    assert math_speedups.provably_different(sympy.pi, sympy.Rational(355, 113))  # differ by 3e-7
    # Too small a difference for its magnitude to be told from rounding: simplify decides.
    assert not math_speedups.provably_different(sympy.Integer(10) ** 50 + 1, sympy.Integer(10) ** 50)
    assert not math_speedups.provably_different(sympy.sqrt(640), 8 * sympy.sqrt(10))  # equal
    assert not math_speedups.provably_different(sympy.sqrt(2) * sympy.sqrt(3), sympy.sqrt(6))
    assert not math_speedups.provably_different(x + 1, x + 2)  # a symbol: simplify decides
    assert not math_speedups.provably_different(sympy.Float("0.3333"), sympy.Rational(1, 3))  # floats too
    assert not math_speedups.provably_different(sympy.FiniteSet(1, 2), sympy.FiniteSet(1, 3))
    assert not math_speedups.provably_different(sympy.zoo, sympy.Integer(1))
    assert not math_speedups.provably_different(1 + sympy.I, sympy.Integer(1))  # complex: simplify decides


def _items(n: int, seed: int) -> list[tuple[str, str]]:
    """(answer, reference) pairs of the kinds a benchmark grades, right and near-miss."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        m = 1000 + k
        r = 3 + k % 5 * 4
        out += [
            (rf"{m} \sqrt{{{r}}}", rf"{m}\sqrt{{{r}}}"), (rf"{m}\sqrt{{{r + 1}}}", rf"{m}\sqrt{{{r}}}"),
            (rf"-\frac{{2}}{{\pi}} + {m}", rf"{m} - \frac{{2}}{{\pi}}"), (rf"{m} + \frac{{2}}{{\pi}}", rf"{m} - \frac{{2}}{{\pi}}"),
            (rf"{m} \cdot 2^{{{k % 9 + 3}}}", rf"2^{{{k % 9 + 3}}} \cdot {m}"), (rf"2^{{{k % 9 + 4}}} \cdot {m}", rf"2^{{{k % 9 + 3}}} \cdot {m}"),
            (rf"\frac{{-1-\sqrt{{{m}}}}}{{2}}, \frac{{-1+\sqrt{{{m}}}}}{{2}}", rf"\frac{{-1+\sqrt{{{m}}}}}{{2}}, \frac{{-1-\sqrt{{{m}}}}}{{2}}"),
            (rf"\frac{{-1+\sqrt{{{m}}}}}{{2}}", rf"\frac{{-1+\sqrt{{{m}}}}}{{2}}, \frac{{-1-\sqrt{{{m}}}}}{{2}}"),
            (rf"{rng.randrange(1, 9)}.{rng.randrange(10, 99)}", rf"\frac{{{m}}}{{{m + 1}}}"),
        ]
    return out + [
        (r"\frac{9}{\sqrt{23}}", r"\frac{9 \sqrt{23}}{23}"), (r"\frac{\pi-2}{\pi}", r"1-\frac{2}{\pi}"),
        (r"2(7+2\sqrt{37})", r"14+4\sqrt{37}"), (r"\frac{\sqrt{570}}{12}", r"\sqrt{\frac{95}{24}}"),
        (r"x^2 + 2x + 1", r"(x+1)^2"), (r"x^2 + 2x", r"(x+1)^2"), (r"[1, 2)", r"[1, 2)"), ("1,2,3", r"\{1,2,3\}"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"), ("5\\%", "0.05"),
        (r"\frac{1}{2", "1"), (r"\sqrt{}", "2"), ("3,5", "3.5"), (r"\text{(A)}", "A"), (r"2 \frac{1}{2}", "2.5"),
    ]


def _clear_caches() -> None:
    import math_verify.parser as parser

    from megatron_pacore.rewards import math as math_grader

    for f in (parser.parse_latex_cached, parser.extract_latex, parser.parse_expr_cached, math_grader._parse_reference):
        f.cache_clear()


def test_parses_and_verdicts_are_the_same_with_and_without_the_speedups(monkeypatch):
    from math_verify import parse, verify

    def run() -> list[tuple[str, str, bool]]:
        _clear_caches()
        out = []
        for answer, reference in _items(6, 0):
            gold, pred = parse(f"${reference}$", parsing_timeout=None), parse(f"${answer}$", parsing_timeout=None)
            out.append((str(gold), str(pred), verify(gold, pred, timeout_seconds=None)))
        return out

    assert math_speedups.install()
    fast = run()
    for owner, name, original in math_speedups.originals():
        monkeypatch.setattr(owner, name, original)
    slow = run()
    monkeypatch.undo()
    assert fast == slow
    assert sum(v for _, _, v in fast) >= 20 and sum(not v for _, _, v in fast) >= 20  # both verdicts tested


def test_grading_workers_install_the_speedups():
    from megatron_pacore.rewards.pool import TimeoutPool

    assert math_speedups.install() is True  # the libraries are the versions they were written for
    with TimeoutPool("megatron_pacore.rewards.math_speedups:installed", workers=1, timeout_s=60,
                     initializer="megatron_pacore.rewards.math:_init_worker") as pool:
        assert [o.value for o in pool.map([()])] == [True]
    with MathGrader(workers=1) as grader:
        [verdict] = grader.grade(["</think>\\boxed{2\\sqrt{3}}"], ["\\sqrt{12}"])
    assert verdict.score == 1.0
