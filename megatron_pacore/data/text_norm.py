"""Normalised text of a problem, as the curriculum filters compare problems.

Two tokenisations, for two questions:

- `tokens` (deduplication): NFKC, lower case, words (`\\w+`) and every other non-space
  character as its own token. Whitespace and case never matter, symbols do: "What is 7 + 5?"
  and "what is 7+5 ?" are the same problem, "What is 7 * 5?" is another one.
- `words` (decontamination, the usual word n-gram overlap): NFKC, lower case, words only.
  Punctuation and LaTeX markup are dropped, so a benchmark problem copied with other
  spacing, dollar signs or punctuation still shares its word n-grams with the copy.
"""
from __future__ import annotations

import re
import unicodedata

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def tokens(text: str) -> list[str]:
    """Words and single symbols of `text`, case- and spacing-insensitive (deduplication)."""
    return _TOKEN.findall(_fold(text))


def words(text: str) -> list[str]:
    """The words of `text`, lower case, no punctuation or markup (decontamination)."""
    return _WORD.findall(_fold(text))


def normalized(text: str) -> str:
    """The key of exact-duplicate detection: `tokens` joined by single spaces."""
    return " ".join(tokens(text))
