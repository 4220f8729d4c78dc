"""Resume for `pacore eval`: every generation is written as it finishes and replayed on rerun.

`RecordingGenerator` sits between the runner and the engine. Each `generate()` call is keyed
by its request id and its call number for that id (a retry of failed samples is call 1, 2,
...), and fingerprinted by what was asked (chat, n, sampling). The completions are appended to
`generations.jsonl` and flushed at once, so a crash loses only requests in flight. On a rerun
with the same directory, a call whose key is on disk is answered from disk: the pipeline
reaches the same state without asking the engine again, and continues where it stopped.

A key on disk with another fingerprint (the retry of a request that failed differently) is
generated again, and the newer record wins. Runs with different generation settings are kept
out of one directory by `command.py`, which compares them with the directory's config.json.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

from megatron_pacore.data.jsonl import JsonlAppender
from megatron_pacore.inference.base import Generator
from megatron_pacore.types import Completion, GenerationRequest

GENERATIONS = "generations.jsonl"


def fingerprint(request: GenerationRequest) -> str:
    """What the engine is asked, independent of the request id."""
    body = json.dumps([request.messages, request.n, asdict(request.sampling)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(body.encode("utf-8")).hexdigest()[:16]


def _completion_row(c: Completion) -> dict:
    return {"text": c.text, "completion_tokens": c.completion_tokens, "prompt_tokens": c.prompt_tokens,
            "finish_reason": c.finish_reason, "reasoning": c.reasoning, "error": c.error}


def _parse_record(row: dict) -> tuple[tuple[str, int], str, list[Completion]]:
    return (row["request_id"], int(row["call"])), row["fingerprint"], [Completion(**c) for c in row["completions"]]


class RecordingGenerator:
    """A Generator that records every call of `inner` under `directory` and replays it.

    Attributes:
        generated: calls answered by the engine in this session.
        replayed: calls answered from disk.
    """

    def __init__(self, inner: Optional[Generator], directory: Path) -> None:
        self.inner = inner
        self.path = Path(directory) / GENERATIONS
        self._stored: dict[tuple[str, int], tuple[str, list[Completion]]] = {}
        self._calls: dict[str, int] = {}
        self.generated = 0
        self.replayed = 0
        self._file = JsonlAppender(self.path, _parse_record, what="generation record")
        for key, digest, completions in self._file.records:  # a later record of a key wins
            self._stored[key] = (digest, completions)

    @property
    def stored(self) -> int:
        return len(self._stored)

    def lookup(self, request_id: str, call: int = 0) -> Optional[list[Completion]]:
        """The completions recorded for a call, if any."""
        hit = self._stored.get((request_id, call))
        return None if hit is None else hit[1]

    async def generate(self, request: GenerationRequest) -> Sequence[Completion]:
        call = self._calls.get(request.request_id, 0)
        self._calls[request.request_id] = call + 1
        key = (request.request_id, call)
        digest = fingerprint(request)
        stored = self._stored.get(key)
        if stored is not None and stored[0] == digest:
            self.replayed += 1
            return stored[1]
        if self.inner is None:
            raise RuntimeError(f"request {request.request_id!r} is not recorded and no engine was given")
        completions = list(await self.inner.generate(request))
        # Whole-request failures come back as an exception and are not recorded: a rerun
        # asks again. Sample failures are recorded like any result (the runner retries them).
        self._stored[key] = (digest, completions)
        self._file.append({"request_id": request.request_id, "call": call, "fingerprint": digest,
                           "completions": [_completion_row(c) for c in completions]})
        self.generated += 1
        return completions

    async def close(self) -> None:
        self._file.close()
