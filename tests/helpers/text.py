"""What a generated sample's text is, against its token ids, on a real vLLM engine or server."""
from __future__ import annotations


def assert_text_is_decoded_tokens(text: str, decoded: str) -> None:
    """`text` (what vLLM returned) is `decoded` (the tokenizer's decode of the sample's ids),
    except that vLLM's incremental detokenizer holds back a trailing incomplete UTF-8 sequence
    (a byte-level model can stop mid-character at max_tokens; decode shows it as U+FFFD) and
    does not flush it when the sample ends."""
    assert text and decoded.startswith(text), (text, decoded)
    assert set(decoded[len(text):]) <= {"\ufffd"}, (text, decoded)
