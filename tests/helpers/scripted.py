"""A scripted Generator for unit tests of the round logic: no engine, known outputs."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from megatron_pacore.types import Completion, GenerationRequest

Reply = Union[str, Completion, Exception]


@dataclass
class ScriptedGenerator:
    """Answers each request with `script(request, sample_index, call_number)`.

    A str becomes a successful Completion whose token count is its number of words; a
    Completion is returned as is; an Exception as a reply fails that sample. `raise_for`
    may raise to fail the whole request. Every request is logged with start and end times.
    """

    script: Callable[[GenerationRequest, int, int], Reply]
    delay: Callable[[GenerationRequest], float] = lambda r: 0.0
    raise_for: Optional[Callable[[GenerationRequest, int], Optional[Exception]]] = None
    log: list[tuple[str, float, float, GenerationRequest]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    tokenizer: Optional[Any] = None  # as a server's (ModelGenerator): the message bound counts words

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        loop = asyncio.get_running_loop()
        call = self.calls.get(request.request_id, 0)
        self.calls[request.request_id] = call + 1
        start = loop.time()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay(request))
            if self.raise_for is not None:
                err = self.raise_for(request, call)
                if err is not None:
                    raise err
            out = []
            for i in range(request.n):
                reply = self.script(request, i, call)
                if isinstance(reply, Exception):
                    out.append(Completion(text="", error=f"{type(reply).__name__}: {reply}"))
                elif isinstance(reply, Completion):
                    out.append(reply)
                else:
                    out.append(Completion(text=reply, completion_tokens=len(reply.split()),
                                          prompt_tokens=7, finish_reason="stop"))
            return out
        finally:
            self.in_flight -= 1
            self.log.append((request.request_id, start, loop.time(), request))

    async def check(self) -> None:
        pass

    async def close(self) -> None:
        pass
