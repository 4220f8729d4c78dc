"""The synthesis prompt P(x, M) and the chat of each round.

The template must match the official PaCoRe release byte for byte: the released checkpoints
were trained on it, and a stray newline changes what the model sees.
"""
from __future__ import annotations

import copy
from typing import Sequence

from megatron_pacore.types import Chat

_HEADER = (
    "You are given a problem and a list of reference responses. "
    "Your job is to analyze these references and provide your own response.\n\n"
    "Original Problem:\n"
)
_REFERENCES = "\n\nReference Responses:\n"
_FOOTER = (
    "\n\nNow, based on the original problem and reference responses above, "
    "please provide your own comprehensive solution."
)


def render_synthesis_prompt(problem: str, references: Sequence[str]) -> str:
    """P(x, M): the original problem followed by the reference messages, numbered from 1.

    Texts are inserted unchanged (no stripping): the release renders them verbatim.
    """
    body = "".join(f"\nReference {i}:\n{ref}\n" for i, ref in enumerate(references, 1))
    return _HEADER + problem + _REFERENCES + body + _FOOTER


def last_user_index(messages: Chat) -> int:
    """Index of the last user turn; ValueError if the chat has none."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    raise ValueError("the chat has no user turn to hold the problem")


def round_messages(messages: Chat, problem: str, references: Sequence[str] | None) -> Chat:
    """The chat of one round.

    Round 1 (`references is None`) sends the chat unchanged. Later rounds replace only the
    content of the last user turn with the synthesis prompt built from the ORIGINAL problem
    text; the system prompt and earlier turns stay as they were.
    """
    if references is None:
        return messages
    out = copy.deepcopy(messages)
    out[last_user_index(out)]["content"] = render_synthesis_prompt(problem, references)
    return out
