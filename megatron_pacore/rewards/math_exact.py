"""Plain numbers compared exactly: the math grader's fast path, before math-verify.

    exact_value("-\\dfrac{3}{4}") -> ExactNumber(Fraction(-3, 4), decimal=False)
    compare_exact(answer, reference) -> True / False / None (None: ask math-verify)

Most references are plain numbers (every AIME answer is an integer; many others a fraction or
a terminating decimal), and parsing them with math-verify's LaTeX parser costs milliseconds
where comparing two `Fraction`s costs microseconds. The forms read here, each optionally
inside one pair of `$`:

- integers: `42`, `-7`, `+5`, `007`, and thousands groups `1,000` / `12,345,678` (what
  math-verify reads as one number; `12,34` and `1,2` are lists to it, and are not read here);
- decimals: `3.0`, `0.50`, `.5`, `3.`;
- fractions: `a/b` and `\\frac{a}{b}` / `\\dfrac` / `\\tfrac` of integers, with at most one
  sign in front and one inside each of numerator and denominator (`-\\frac{1}{2}`,
  `\\frac{-1}{2}`); a zero denominator is not read.

Only ASCII digits count (Python's `int` would also take `٣`, which math-verify does not read).
Anything else -- units, `\\%`, `\\text{...}`, powers, `1e3`, `2\\frac{1}{2}`, `1/2/3`,
`\\frac12` without braces, `--5` -- is not read, and math-verify grades it as before.

The verdict: equal values are correct (math-verify accepts every such pair too: `3.0` and
`3`, `0.5` and `\\frac{1}{2}`, `1,000` and `1000`). Unequal values are wrong when neither is
a decimal; when one is, the answer is left to math-verify, which compares decimals rounded
to 6 places (`0.333333` is accepted for `\\frac{1}{3}`), so the fast path never changes a
verdict on that tolerance.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

_D = r"[0-9]{1,100}"
_INTEGER = rf"(?:[1-9][0-9]{{0,2}}(?:,[0-9]{{3}}){{1,33}}|{_D})"  # thousands groups, or plain digits
_DECIMAL = rf"(?:{_D}\.[0-9]{{0,100}}|\.{_D})"
_SIGNED = rf"[+-]?\s*{_D}"
_NUMBER = re.compile(
    rf"""\s*(?:\$\s*)?(?P<sign>[+-]?)\s*(?:
        (?P<decimal>{_DECIMAL})
      | (?P<integer>{_INTEGER})
      | (?P<num>{_D})\s*/\s*(?P<den>{_D})
      | \\[dt]?frac\s*\{{\s*(?P<fnum>{_SIGNED})\s*\}}\s*\{{\s*(?P<fden>{_SIGNED})\s*\}}
    )\s*(?:\$\s*)?""",
    re.VERBOSE | re.ASCII,
)


@dataclass(frozen=True)
class ExactNumber:
    """A plain number read exactly; `decimal` when it was written with a decimal point."""

    value: Fraction
    decimal: bool


def _int(text: str) -> int:
    return int(re.sub(r"\s", "", text))


def exact_value(text: str) -> Optional[ExactNumber]:
    """The exact value of `text` if it is one of the plain forms of the module doc, else None."""
    if len(text) > 400:
        return None
    m = _NUMBER.fullmatch(text)
    if m is None or text.count("$") not in (0, 2):
        return None
    sign = -1 if m["sign"] == "-" else 1
    if m["decimal"] is not None:
        return ExactNumber(sign * Fraction(m["decimal"] if m["decimal"][-1] != "." else m["decimal"][:-1]), True)
    if m["integer"] is not None:
        return ExactNumber(Fraction(sign * int(m["integer"].replace(",", ""))), False)
    num, den = (_int(m["num"]), _int(m["den"])) if m["num"] is not None else (_int(m["fnum"]), _int(m["fden"]))
    if den == 0:
        return None
    return ExactNumber(sign * Fraction(num, den), False)


def compare_exact(answer: str, reference: str) -> Optional[bool]:
    """True / False when both are plain numbers and the values decide it; None when
    math-verify must (either is not a plain number, or unequal values involve a decimal)."""
    a, r = exact_value(answer), exact_value(reference)
    if a is None or r is None:
        return None
    if a.value == r.value:
        return True
    if a.decimal or r.decimal:
        return None
    return False
