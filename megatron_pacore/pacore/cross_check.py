"""Cross-checking markers: a synthesis response that refers to a reference message by number.

The paper reports such markers ("However, in message 3 ...") emerging during training as the
model learns to verify its references instead of copying or voting. `refers_to_message`
detects a reference to a numbered message of the synthesis prompt; the trainer logs the share
of responses that do as `rollout/cross_check_rate`.
"""
from __future__ import annotations

import re

# "message 3", "Message #12", "response 2", "reference 4", "solution 1", "answer 5" (the
# synthesis prompt numbers its messages, e.g. "Response 1"), and the plural "messages 2 and 5".
_MARKER = re.compile(r"\b(?:messages?|responses?|references?|solutions?|answers?|candidates?)\s*#?\s*\(?(\d{1,3})\b",
                     re.IGNORECASE)


def refers_to_message(text: str, num_messages: int) -> bool:
    """Whether `text` names a message 1..num_messages of its prompt by number."""
    return any(1 <= int(m.group(1)) <= num_messages for m in _MARKER.finditer(text))


def cross_check_rate(texts: list[str], num_messages: list[int]) -> float:
    """Share of responses that refer to one of their prompt's messages by number."""
    if not texts:
        return 0.0
    return sum(refers_to_message(t, n) for t, n in zip(texts, num_messages, strict=True)) / len(texts)
