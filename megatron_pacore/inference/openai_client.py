"""A Generator over any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, ...).

Built on httpx (openai_http.py; it says why not on the `openai` SDK, whose import alone cost
more than the rest of `pacore infer`'s start-up) with no retries of its own: the PaCoRe runner
retries failed samples itself, with backoff, and only the samples that failed.

What a server returns, and how it becomes `Completion`s:

- `message.content` may be null (a reasoning parser that saw no answer, a tool call): the
  text is then "". The thinking of a reasoning parser arrives as `reasoning_content` (older
  vLLM, SGLang, DeepSeek) or `reasoning` (what vLLM 0.32 sends); either lands in
  `Completion.reasoning`.
- Streaming (SSE) chunks are accumulated per choice `index`; chunks of different choices
  interleave. Usage comes from the final chunk (`stream_options.include_usage`).
- Token counts. `usage` counts the whole request, so for n > 1 it is the sum over choices.
  vLLM 0.32 returns exact per-choice token ids when asked (`return_token_ids: true`: a
  `token_ids` list on every non-streamed choice, and delta `token_ids` on every streamed
  chunk), so we ask for them and count them. Servers that reject the field are remembered
  and no longer asked. For n = 1 `usage.completion_tokens` is exact. Only when a server gives
  neither (n > 1, no token ids) is the aggregate split across choices in proportion to their
  text length (largest remainder), so that the sum, i.e. test-time compute, stays exact;
  per-choice counts are then estimates and a warning says so once.
- n > 1 in one request shares the prompt's prefix. A server that refuses n > 1 (HTTP 400/422/501
  on an n > 1 request that succeeds as n single requests), or answers it with one choice,
  is remembered: later requests to it go out as n single requests with seeds seed + i, so that
  seeded samples still differ.
- A choice that ends with finish_reason "error"/"abort", or is missing, becomes a Completion
  with `error` set; an HTTP or connection error for the whole request raises GenerationError.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

from megatron_pacore.inference.base import GenerationError
from megatron_pacore.inference.openai_http import ChatHTTP, StatusFailure, TransportFailure
from megatron_pacore.types import Completion, GenerationRequest

log = logging.getLogger(__name__)

# finish_reason values that mean the sample did not complete.
FAILED_FINISH_REASONS = ("error", "abort")
# Status codes with which a server may refuse n > 1.
_N_REFUSAL_STATUS = (400, 422, 501)


def normalize_base_url(url: str) -> str:
    """The API root ending in `/v1`, from `http://h:p`, `http://h:p/v1` or a full
    `http://h:p/v1/chat/completions`."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server URL must look like http://host:port[/v1], got {url!r}")
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/completions", "/models"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    if not path.endswith("/v1"):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def _get(obj: Any, name: str) -> Any:
    """`obj[name]` of a JSON object; None when absent or when `obj` is not an object."""
    return obj.get(name) if isinstance(obj, dict) else None


def _reasoning(obj: Any) -> Optional[str]:
    value = _get(obj, "reasoning_content")
    return value if value is not None else _get(obj, "reasoning")


def split_aggregate(total: int, weights: list[int]) -> list[int]:
    """Split `total` tokens in proportion to `weights` (largest remainder): the parts sum to
    `total` exactly. Equal shares when every weight is 0."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    scale = sum(weights)
    exact = [total * w / scale for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: parts[i] - exact[i])
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


class ServerHTTPError(GenerationError):
    """The server answered the whole request with an HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Choice:
    """One choice, accumulated from a whole response or from stream deltas."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.token_ids: Optional[list[int]] = None
        self.finish_reason: Optional[str] = None

    def add(self, content: Optional[str], reasoning: Optional[str], token_ids: Any, finish: Any) -> None:
        if content:
            self.content.append(content)
        if reasoning:
            self.reasoning.append(reasoning)
        if token_ids is not None:
            self.token_ids = (self.token_ids or []) + list(token_ids)
        if finish is not None:
            self.finish_reason = finish

    def completion(self, completion_tokens: int, prompt_tokens: int) -> Completion:
        reasoning = "".join(self.reasoning) if self.reasoning else None
        error = None
        if self.finish_reason in FAILED_FINISH_REASONS:
            error = f"server ended the sample with finish_reason={self.finish_reason!r}"
        return Completion(
            text="" if error else "".join(self.content), completion_tokens=completion_tokens,
            prompt_tokens=prompt_tokens, finish_reason=self.finish_reason, reasoning=reasoning,
            error=error, token_ids=self.token_ids,
        )


class OpenAIGenerator:
    """Samples completions from an OpenAI-compatible chat server.

    Args:
        base_url: server URL, with or without `/v1`, or the full `/v1/chat/completions`.
        model: served model name; None asks `/v1/models` (which must serve exactly one).
        api_key: bearer token; vLLM without `--api-key` accepts anything.
        stream: stream responses (SSE) instead of waiting for whole ones.
        request_timeout_s: longest wait for a response (long reasoning takes hours).
        connect_timeout_s: longest wait to connect; `check()` fails within about this.
        max_connections: HTTP connection pool size (requests in flight at once).
        extra_body: more request fields, e.g. {"top_k": 20} or
            {"chat_template_kwargs": {"enable_thinking": True}}.
    """

    def __init__(
        self,
        base_url: str,
        model: Optional[str] = None,
        api_key: str = "EMPTY",
        stream: bool = False,
        request_timeout_s: float = 7200,
        connect_timeout_s: float = 5.0,
        max_connections: int = 256,
        extra_body: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if request_timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError(
                f"timeouts must be > 0, got request_timeout_s={request_timeout_s}, "
                f"connect_timeout_s={connect_timeout_s}"
            )
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.base_url = normalize_base_url(base_url)
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.tokenizer = None  # the server's stays with it (ModelGenerator.tokenizer)
        self.stream = stream
        self.connect_timeout_s = connect_timeout_s
        self.extra_body = dict(extra_body or {})
        # Learned about the server: it refuses n > 1 / it rejects `return_token_ids`.
        self.fan_out = False
        self.ask_token_ids = True
        self._warned_split = False
        self._model_lock = asyncio.Lock()
        self._http = ChatHTTP(self.base_url, api_key, request_timeout_s, connect_timeout_s, max_connections)

    # -- server and model ----------------------------------------------------------------

    async def check(self) -> None:
        """Reach the server and resolve the model. Raises GenerationError naming the URL if
        the server cannot be reached or stays silent, within 3 x `connect_timeout_s`;
        ValueError if the model is not served (or, with model=None, not exactly one is)."""
        await self._resolve_model(check=True)

    async def _resolve_model(self, check: bool = False) -> str:
        async with self._model_lock:
            if self.model is not None and not check:
                return self.model
            # /v1/models answers in milliseconds; a server that stays silent is as good as down.
            try:
                page = await self._http.get_json("/models", 2 * self.connect_timeout_s, self.connect_timeout_s)
            except StatusFailure as e:
                raise GenerationError(f"{self.base_url}/models: {e}") from e
            except TransportFailure as e:
                raise GenerationError(
                    f"cannot reach the OpenAI-compatible server at {self.base_url} ({e}); is it running?"
                ) from e
            data = _get(page, "data")
            if not isinstance(data, list) or not all(isinstance(_get(m, "id"), str) for m in data):
                raise GenerationError(f"{self.base_url}/models: not a model list: {str(page)[:200]}")
            served = [m["id"] for m in data]
            if self.model is None:
                if len(served) != 1:
                    raise ValueError(
                        f"{self.base_url} serves {len(served)} models {served}; pass model=NAME"
                    )
                self.model = served[0]
            elif self.model not in served:
                raise ValueError(f"{self.base_url} does not serve model {self.model!r}; it serves {served}")
            return self.model

    # -- generation ----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        """`request.n` completions of `request.messages` (see the module doc)."""
        if request.n < 1:
            raise ValueError(f"n must be >= 1, got {request.n}")
        await self._resolve_model()
        n = request.n
        if n > 1 and self.fan_out:
            return await self._fan_out(request, range(n))
        try:
            got = await self._call(request, n)
        except ServerHTTPError as e:
            if n == 1 or e.status not in _N_REFUSAL_STATUS:
                raise
            # Maybe the server refuses n > 1: it does if single requests succeed.
            singles = await self._fan_out(request, range(n), cause=e)
            log.warning("%s refused n=%d (%s); sending single requests from now on", self.url, n, e)
            self.fan_out = True
            return singles
        if n > 1 and set(got) == {0}:
            log.warning("%s returned 1 of n=%d choices; sending single requests from now on", self.url, n)
            self.fan_out = True
            return [got[0]] + await self._fan_out(request, range(1, n))
        return [got.get(i) or _missing(i) for i in range(n)]

    async def _fan_out(self, request: GenerationRequest, indices: range,
                       cause: Optional[ServerHTTPError] = None) -> list[Completion]:
        """One single request per sample, seeds seed + i; a failed one becomes an errored
        Completion. If every one fails, raise `cause` (the n > 1 refusal) or the first error."""
        async def one(i: int) -> Completion:
            seed = request.sampling.seed
            sampling = request.sampling if seed is None else replace(request.sampling, seed=seed + i)
            single = GenerationRequest(f"{request.request_id}/{i}", request.messages, 1, sampling)
            return (await self._call(single, 1)).get(0) or _missing(0)

        results = await asyncio.gather(*(one(i) for i in indices), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # cancellation
        if results and all(isinstance(r, BaseException) for r in results):
            raise cause or results[0]  # type: ignore[misc]
        return [
            Completion(text="", error=f"{type(r).__name__}: {r}") if isinstance(r, BaseException) else r
            for r in results
        ]

    def _body(self, request: GenerationRequest, n: int) -> dict[str, Any]:
        """The JSON body of one chat request: the standard fields, then the vendor extras
        (`extra_body`, vLLM's `ignore_eos` and `return_token_ids`). Unset settings are left out."""
        s = request.sampling
        body: dict[str, Any] = {
            "model": self.model, "messages": request.messages, "n": n,
            "temperature": s.temperature, "top_p": s.top_p,
        }
        if s.max_tokens is not None:
            body["max_tokens"] = s.max_tokens
        if s.seed is not None:
            body["seed"] = s.seed
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body)
        if s.ignore_eos:
            body["ignore_eos"] = True  # vLLM / SGLang extension
        if self.ask_token_ids:
            body["return_token_ids"] = True  # vLLM: exact per-choice token counts
        return body

    async def _call(self, request: GenerationRequest, n: int) -> dict[int, Completion]:
        """One HTTP request; the completions it returned, by choice index."""
        body = self._body(request, n)
        try:
            if self.stream:
                return await self._streamed(body)
            return self._parse(await self._http.post_json("/chat/completions", body))
        except StatusFailure as e:
            if e.status in (400, 422) and "return_token_ids" in e.detail and self.ask_token_ids:
                log.warning("%s rejects return_token_ids; per-choice token counts fall back to usage", self.url)
                self.ask_token_ids = False
                return await self._call(request, n)
            raise ServerHTTPError(f"{self.url}: {e}", e.status) from e
        except TransportFailure as e:
            raise GenerationError(f"{self.url}: {e}") from e

    def _add(self, choices: dict[int, _Choice], c: Any, part: str) -> None:
        """Add one choice of a response (`part` "message") or stream chunk ("delta")."""
        index = _get(c, "index")
        if not isinstance(index, int):
            raise TransportFailure(f"a choice without an integer index: {str(c)[:200]}")
        msg = _get(c, part)
        choices.setdefault(index, _Choice()).add(
            _get(msg, "content"), _reasoning(msg), _get(c, "token_ids"), _get(c, "finish_reason"),
        )

    def _parse(self, response: Any) -> dict[int, Completion]:
        choices: dict[int, _Choice] = {}
        for c in _get(response, "choices") or []:
            self._add(choices, c, "message")
        return self._finish(choices, _get(response, "usage"), _get(response, "prompt_token_ids"))

    async def _streamed(self, body: dict[str, Any]) -> dict[int, Completion]:
        choices: dict[int, _Choice] = {}
        usage = prompt_ids = None
        async with contextlib.aclosing(self._http.post_events("/chat/completions", body)) as events:
            async for chunk in events:
                usage = _get(chunk, "usage") or usage
                prompt_ids = prompt_ids or _get(chunk, "prompt_token_ids")
                for c in _get(chunk, "choices") or []:
                    self._add(choices, c, "delta")
        return self._finish(choices, usage, prompt_ids)

    def _finish(self, choices: dict[int, _Choice], usage: Any, prompt_ids: Any) -> dict[int, Completion]:
        """Completions by index, with token counts (see the module doc)."""
        prompt_tokens = int(_get(usage, "prompt_tokens") or (len(prompt_ids) if prompt_ids else 0))
        total = _get(usage, "completion_tokens")
        indices = sorted(choices)
        if all(choices[i].token_ids is not None for i in indices):
            counts = [len(choices[i].token_ids or []) for i in indices]
        elif total is None:
            counts = [0] * len(indices)
            self._warn_once("sent neither usage nor token ids: completion tokens are recorded as 0")
        elif len(indices) == 1:
            counts = [int(total)]
        else:
            weights = [len("".join(choices[i].content)) + len("".join(choices[i].reasoning)) for i in indices]
            counts = split_aggregate(int(total), weights)
            self._warn_once("gives only aggregate usage for n > 1: per-choice completion tokens "
                            "are split by text length (their sum is exact)")
        return {i: choices[i].completion(k, prompt_tokens) for i, k in zip(indices, counts)}

    def _warn_once(self, what: str) -> None:
        if not self._warned_split:
            self._warned_split = True
            log.warning("%s %s", self.url, what)

    async def close(self) -> None:
        await self._http.close()


def _missing(index: int) -> Completion:
    return Completion(text="", error=f"server returned no choice with index {index}")
