"""Compaction C(w): a trajectory's final conclusion, the message passed to the next round."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

THINK_END = "</think>"


def compact(text: str) -> str:
    """Everything after the last `</think>`, unchanged (no strip); the whole text if none."""
    cut = text.rfind(THINK_END)
    return text if cut < 0 else text[cut + len(THINK_END):]


@dataclass(frozen=True)
class Compacted:
    """A message and how many leading characters the token bound removed (0: none)."""

    message: str
    truncated_chars: int = 0


def compact_bounded(
    text: str,
    max_message_tokens: Optional[int] = None,
    tokenize: Optional[Callable[[str], list[int]]] = None,
    detokenize: Optional[Callable[[list[int]], str]] = None,
) -> Compacted:
    """C(w), then keep at most `max_message_tokens` tokens of it: the TAIL, where the final
    answer sits. Off by default, as released. (`max_message_tokens` >= 1 is checked where it
    is configured: config.GenerationOptions.)

    Without a tokenizer, tokens are approximated by whitespace-separated words; the cut is
    recorded either way so a reader can tell a bounded message from a short one.
    """
    message = compact(text)
    if max_message_tokens is None:
        return Compacted(message)
    if tokenize is not None and detokenize is not None:
        ids = tokenize(message)
        if len(ids) <= max_message_tokens:
            return Compacted(message)
        tail = detokenize(ids[-max_message_tokens:])
    else:
        words = message.split(" ")
        if len(words) <= max_message_tokens:
            return Compacted(message)
        tail = " ".join(words[-max_message_tokens:])
    return Compacted(tail, truncated_chars=len(message) - len(tail))
