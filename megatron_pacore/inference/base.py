"""The Generator seams: anything that samples completions of a chat.

The multi-round runner talks only to `Generator`, so every behaviour of the method is
testable with a scripted generator and runs unchanged on a real vLLM engine or server.
`ModelGenerator` is what `inference.factory` makes from `--model` and what the jobs (infer,
eval) ask more of: a reachability check and, for the exact message bound, a tokenizer. This
module imports no vllm.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

from megatron_pacore.types import Completion, GenerationRequest


class Generator(Protocol):
    """Samples `request.n` completions of `request.messages`.

    Returns one Completion per sample (length n). A sample that failed is a Completion with
    `error` set; an exception means the whole request failed. Both are retried by the runner.
    """

    async def generate(self, request: GenerationRequest) -> Sequence[Completion]: ...

    async def close(self) -> None: ...


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer the message bound uses."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ModelGenerator(Generator, Protocol):
    """A Generator over a model (an in-process engine or a server), as the factory makes it.

    `tokenizer`: the model's tokenizer where it is at hand (in-process engine), None for a
    server (the message bound then counts words). `check()`: raise GenerationError naming
    the engine or URL if it cannot serve, so that a wrong URL fails in seconds rather than
    after the runner's retries; an in-process engine that started returns at once.
    """

    tokenizer: Optional[Tokenizer]

    async def check(self) -> None: ...


class GenerationError(RuntimeError):
    """A request that could not be served; the message says why and where."""
