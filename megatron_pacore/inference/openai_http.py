"""The wire under the OpenAI-compatible client: JSON requests and server-sent events over httpx.

Why not the official `openai` SDK: `pacore infer --model http://...` paid its import before
its first request, 0.48-0.90 s on the 2-core build machine (`python -X importtime -c "import
openai"`, openai 3.57: pydantic models of the whole OpenAI API and an aiohttp transport),
against ~0.08 s for httpx2, the HTTP library the SDK is itself built on (benchmarks/
cli_startup.py measures the whole start-up). The client speaks two endpoints, `GET /models`
and `POST /chat/completions` (whole or streamed), so this module speaks them directly, with
the SDK's behaviour where it matters: bearer auth, redirects followed, a connection pool of
`max_connections`, and no retries (the PaCoRe runner retries failed samples itself, and only
those).

Errors: an HTTP error status is `StatusFailure` (status and the server's own message); a
connection, timeout or protocol failure, a body that is not JSON, or an `{"error": ...}`
event inside a stream (the status was 200 and is spent) is `TransportFailure`. The caller
words them (openai_client.py). Using the session after `close()` raises httpx's RuntimeError
("... the client has been closed").
"""
from __future__ import annotations

import json
from typing import Any, AsyncIterator, Optional

import httpx2 as httpx  # the maintained httpx line (same API); the openai SDK >= 3 is built on it

from megatron_pacore.inference.base import GenerationError


class StatusFailure(GenerationError):
    """The server answered with an HTTP error status (or an error event in a stream)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class TransportFailure(GenerationError):
    """No usable answer: connection refused, timeout, broken stream, a body that is not JSON,
    an error event in a stream."""


def error_detail(body: Any, text: str, status: int) -> str:
    """The server's own words for an error: `{"error": {"message": ...}}` (OpenAI, vLLM),
    `{"message": ...}` (older vLLM), else the body itself (cut to 500 characters)."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
        if body.get("message"):
            return str(body["message"])
    return text.strip()[:500] or f"error code {status}"


def describe(e: BaseException) -> str:
    """An exception and the one under it ("ConnectError: All connection attempts failed")."""
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if e.__cause__ is not None and str(e.__cause__) not in text:
        text += f" ({type(e.__cause__).__name__}: {e.__cause__})"
    return text


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class ChatHTTP:
    """An async HTTP session to one OpenAI-compatible API root (`.../v1`).

    Args:
        base_url: the API root, ending in `/v1`.
        api_key: sent as `Authorization: Bearer ...`.
        request_timeout_s: longest wait for a response (read, write and pool timeouts).
        connect_timeout_s: longest wait to connect.
        max_connections: connection pool size (and keep-alive connections).
    """

    def __init__(self, base_url: str, api_key: str, request_timeout_s: float, connect_timeout_s: float,
                 max_connections: int) -> None:
        self.base_url = base_url
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(request_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=True,
        )

    async def get_json(self, path: str, timeout_s: Optional[float] = None, connect_s: Optional[float] = None) -> Any:
        """GET `base_url + path`, its JSON body; optional tighter timeouts for this request."""
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if timeout_s is not None:
            timeout = httpx.Timeout(timeout_s, connect=connect_s)
        try:
            response = await self._client.get(self.base_url + path, timeout=timeout)
        except httpx.HTTPError as e:
            raise TransportFailure(describe(e)) from e
        return self._body(response)

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` as JSON to `base_url + path`; the JSON answer."""
        try:
            response = await self._client.post(self.base_url + path, json=body)
        except httpx.HTTPError as e:
            raise TransportFailure(describe(e)) from e
        return self._body(response)

    async def post_events(self, path: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        """POST `body` and yield the JSON data of each server-sent event until `[DONE]` (or the
        end of the stream)."""
        try:
            async with self._client.stream("POST", self.base_url + path, json=body,
                                           headers={"Accept": "text/event-stream"}) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._body(response)  # raises StatusFailure
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line:
                        field, _, value = line.partition(":")
                        if field == "data":  # other fields (event, id, retry) and comments: unused
                            data.append(value[1:] if value.startswith(" ") else value)
                        continue
                    if not data:  # a blank line ends an event; an event without data is skipped
                        continue
                    payload, data = "\n".join(data), []
                    if payload.strip() == "[DONE]":
                        return
                    yield self._event(payload)
                if data and "\n".join(data).strip() != "[DONE]":  # a last event without its blank line
                    yield self._event("\n".join(data))
        except httpx.HTTPError as e:
            raise TransportFailure(describe(e)) from e

    @staticmethod
    def _event(payload: str) -> Any:
        chunk = _json(payload)
        if chunk is None:
            raise TransportFailure(f"stream event is not JSON: {payload[:200]!r}")
        if isinstance(chunk, dict) and chunk.get("error") is not None:
            raise TransportFailure("error in the stream: " + error_detail(chunk, payload, 200))
        return chunk

    @staticmethod
    def _body(response: Any) -> Any:
        text = response.text
        body = _json(text)
        if response.status_code >= 400:
            raise StatusFailure(response.status_code, error_detail(body, text, response.status_code))
        if body is None:
            raise TransportFailure(f"HTTP {response.status_code} with a body that is not JSON: {text[:200]!r}")
        return body

    async def close(self) -> None:
        await self._client.aclose()
