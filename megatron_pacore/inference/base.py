"""The Generator seam: anything that samples completions of a chat.

The multi-round runner talks only to this Protocol, so every behaviour of the method is
testable with a scripted generator and runs unchanged on a real vLLM engine or server. This
module imports no vllm.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from megatron_pacore.types import Completion, GenerationRequest


@runtime_checkable
class Generator(Protocol):
    """Samples `request.n` completions of `request.messages`.

    Returns one Completion per sample (length n). A sample that failed is a Completion with
    `error` set; an exception means the whole request failed. Both are retried by the runner.
    """

    async def generate(self, request: GenerationRequest) -> Sequence[Completion]: ...

    async def close(self) -> None: ...


class GenerationError(RuntimeError):
    """A request that could not be served; the message says why and where."""
