"""OpenAIGenerator's parsing and server-adaptation rules, against a scripted HTTP server.

The server is a real aiohttp app on 127.0.0.1 (random free port) whose answers each test
scripts, so these tests exercise the whole client path (SDK, HTTP, SSE) while asserting
exactly what a response turns into. The real vLLM server is in tests/integration.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import web

from megatron_pacore.inference.base import GenerationError
from megatron_pacore.inference.factory import tokenizer_fns
from megatron_pacore.inference.openai_client import OpenAIGenerator, normalize_base_url, split_aggregate
from megatron_pacore.types import GenerationRequest, SamplingSettings

MODEL = "tiny"
CHAT = [{"role": "user", "content": "What is 1+1?"}]
Script = Callable[[dict[str, Any], web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def scripted_server(script: Script, models: tuple[str, ...] = (MODEL,)):
    """Serve `script` at /v1/chat/completions on a free loopback port; yields (url, bodies)
    where `bodies` collects every chat request body received."""
    bodies: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        bodies.append(body)
        return await script(body, request)

    async def list_models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", list_models)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", bodies
    finally:
        await runner.cleanup()


def response(choices: list[dict[str, Any]], usage: dict[str, int] | None) -> web.Response:
    body: dict[str, Any] = {"id": "c", "object": "chat.completion", "created": 0, "model": MODEL, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return web.json_response(body)


def choice(index: int, content: str | None, finish: str = "stop", **extra: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    message.update({k: v for k, v in extra.items() if k in ("reasoning_content", "reasoning")})
    out = {"index": index, "message": message, "finish_reason": finish}
    out.update({k: v for k, v in extra.items() if k == "token_ids"})
    return out


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def sse(request: web.Request, chunks: list[dict[str, Any]]) -> web.StreamResponse:
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    for chunk in chunks:
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": MODEL, **chunk}
        await out.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await out.write(b"data: [DONE]\n\n")
    await out.write_eof()
    return out


def req(n: int = 1, **sampling: Any) -> GenerationRequest:
    return GenerationRequest("p/r1", CHAT, n, SamplingSettings(**sampling))


# -- URLs and arithmetic ------------------------------------------------------------------

@pytest.mark.parametrize(
    "given",
    ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/",
     "http://h:8000/v1/chat/completions", " http://h:8000/v1/chat/completions/ "],
)
def test_base_url_forms_normalise_to_the_v1_root(given):
    assert normalize_base_url(given) == "http://h:8000/v1"


def test_base_url_keeps_a_path_prefix():
    assert normalize_base_url("https://gw.example/serve/v1/chat/completions") == "https://gw.example/serve/v1"
    assert normalize_base_url("https://gw.example/serve") == "https://gw.example/serve/v1"


def test_base_url_without_scheme_is_a_value_error():
    with pytest.raises(ValueError, match="http://host:port"):
        OpenAIGenerator("localhost:8000")


def test_aggregate_split_sums_exactly_and_follows_text_length():
    assert split_aggregate(30, [10, 20]) == [10, 20]
    assert split_aggregate(10, [1, 1, 1]) == [4, 3, 3]
    assert split_aggregate(7, [0, 0]) == [4, 3]
    assert sum(split_aggregate(1001, [3, 5, 7, 11])) == 1001


async def test_generator_behaves_as_the_factory_expects():
    """What open_generator and the jobs use (ModelGenerator): check() resolves the served
    model, there is no local tokenizer (the message bound counts words), generate() returns
    n Completions, close() ends the session (no request goes out after it)."""
    async def script(body, request):
        return response([choice(i, f"answer {i}") for i in range(body["n"])], usage(5, 4))

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url)
        await gen.check()
        assert gen.model == MODEL
        assert tokenizer_fns(gen) == (None, None)
        out = await gen.generate(req(n=2))
        assert [c.text for c in out] == ["answer 0", "answer 1"] and all(c.ok for c in out)
        await gen.close()
        with pytest.raises(RuntimeError, match="closed"):
            await gen.generate(req(n=1))


# -- non-streaming parsing ----------------------------------------------------------------

async def test_content_null_becomes_empty_text_and_reasoning_is_kept():
    async def script(body, request):
        return response(
            [choice(0, None, "length", reasoning_content="thinking...", token_ids=[5, 6, 7]),
             choice(1, "2", reasoning="1+1=2", token_ids=[8, 9])],
            usage(11, 5),
        )

    async with scripted_server(script) as (url, bodies):
        gen = OpenAIGenerator(url)
        out = await gen.generate(req(n=2, max_tokens=3))
        await gen.close()
    assert [c.text for c in out] == ["", "2"]
    assert [c.reasoning for c in out] == ["thinking...", "1+1=2"]
    assert [c.completion_tokens for c in out] == [3, 2]  # from token_ids, exact
    assert [c.token_ids for c in out] == [[5, 6, 7], [8, 9]]
    assert [c.finish_reason for c in out] == ["length", "stop"]
    assert all(c.ok and c.prompt_tokens == 11 for c in out)


async def test_sampling_settings_map_to_the_request_body_and_model_is_discovered():
    async def script(body, request):
        return response([choice(i, "x", token_ids=[1]) for i in range(body["n"])], usage(3, body["n"]))

    async with scripted_server(script) as (url, bodies):
        gen = OpenAIGenerator(url + "/v1/chat/completions")
        await gen.generate(req(n=3, max_tokens=17, temperature=0.6, top_p=0.95, seed=7, ignore_eos=True))
        await gen.generate(req(n=1))
        await gen.close()
    first, second = bodies
    assert first["model"] == MODEL and first["messages"] == CHAT
    assert (first["n"], first["max_tokens"], first["temperature"], first["top_p"], first["seed"]) == (3, 17, 0.6, 0.95, 7)
    assert first["ignore_eos"] is True and first["return_token_ids"] is True
    assert "stream" not in first or first["stream"] is False
    # Unset settings are omitted, not sent as null.
    assert "max_tokens" not in second and "seed" not in second and "ignore_eos" not in second


async def test_aggregate_usage_without_token_ids_is_split_by_text_length():
    async def script(body, request):
        return response([choice(0, "a" * 10), choice(1, "b" * 30)], usage(4, 100))

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url)
        out = await gen.generate(req(n=2))
        await gen.close()
    assert [c.completion_tokens for c in out] == [25, 75]
    assert sum(c.completion_tokens for c in out) == 100


async def test_single_choice_count_comes_from_usage_when_no_token_ids():
    async def script(body, request):
        return response([choice(0, "hello")], usage(4, 9))

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url)
        (out,) = await gen.generate(req())
        await gen.close()
    assert (out.text, out.completion_tokens, out.prompt_tokens, out.token_ids) == ("hello", 9, 4, None)


async def test_aborted_choice_is_a_failed_completion_and_missing_index_is_reported():
    async def script(body, request):
        return response(
            [choice(0, "fine", token_ids=[1, 2]), choice(2, "partial", "abort", token_ids=[3])], usage(4, 3)
        )

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url)
        out = await gen.generate(req(n=3))
        await gen.close()
    assert out[0].ok and out[0].text == "fine"
    assert "no choice with index 1" in out[1].error
    assert "abort" in out[2].error and out[2].text == "" and out[2].completion_tokens == 1


async def test_http_error_for_the_whole_request_raises_naming_the_url():
    async def script(body, request):
        return web.json_response({"error": {"message": "engine dead", "code": 500}}, status=500)

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url, model=MODEL)
        with pytest.raises(GenerationError, match=r"/v1/chat/completions: HTTP 500.*engine dead"):
            await gen.generate(req(n=2))
        await gen.close()
    assert gen.fan_out is False  # a 5xx is not a refusal of n > 1


# -- streaming ----------------------------------------------------------------------------

async def test_stream_accumulates_interleaved_choices_by_index():
    def delta(i, finish=None, ids=None, **d):
        c = {"index": i, "delta": d, "finish_reason": finish}
        if ids is not None:
            c["token_ids"] = ids
        return {"choices": [c]}

    async def script(body, request):
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        return await sse(request, [
            delta(1, role="assistant", content=""), delta(0, role="assistant", content=""),
            delta(1, reasoning_content="hm", ids=[10]), delta(0, content="The ", ids=[1]),
            delta(1, content="B", ids=[11]), delta(0, content="answer", ids=[2, 3]),
            delta(1, content="!", finish="stop", ids=[12]), delta(0, content=None, finish="length", ids=[4]),
            {"choices": [], "usage": usage(6, 7)},
        ])

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url, stream=True)
        out = await gen.generate(req(n=2))
        await gen.close()
    assert [c.text for c in out] == ["The answer", "B!"]
    assert [c.reasoning for c in out] == [None, "hm"]
    assert [c.finish_reason for c in out] == ["length", "stop"]
    assert [c.token_ids for c in out] == [[1, 2, 3, 4], [10, 11, 12]]
    assert [c.completion_tokens for c in out] == [4, 3]
    assert [c.prompt_tokens for c in out] == [6, 6]


async def test_stream_without_token_ids_takes_counts_from_the_usage_chunk():
    async def script(body, request):
        return await sse(request, [
            {"choices": [{"index": 0, "delta": {"content": "ab"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"content": "c"}, "finish_reason": "stop"}]},
            {"choices": [], "usage": usage(5, 2)},
        ])

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url, stream=True)
        (out,) = await gen.generate(req())
        await gen.close()
    assert (out.text, out.completion_tokens, out.prompt_tokens, out.finish_reason) == ("abc", 2, 5, "stop")


async def test_error_event_in_the_stream_raises_naming_the_url():
    async def script(body, request):
        return await sse(request, [
            {"choices": [{"index": 0, "delta": {"content": "par"}, "finish_reason": None}]},
            {"error": {"message": "engine core died", "type": "InternalServerError", "code": 500}},
        ])

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url, stream=True)
        with pytest.raises(GenerationError, match=r"/v1/chat/completions: .*engine core died"):
            await gen.generate(req(n=2))
        await gen.close()


async def test_sse_framing_comments_multiline_data_and_a_last_event_without_blank_line():
    """SSE as servers send it: comment lines (keep-alives), `data:` with or without the space,
    one event's data split over two lines, and a final event the server did not terminate."""
    async def script(body, request):
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b": keep-alive\n\n")
        await out.write(b'data:{"choices": [{"index": 0, "delta": {"content": "a"},\n')
        await out.write(b'data: "finish_reason": null}]}\n\n')
        await out.write(b'event: message\ndata: {"choices": [{"index": 0, "delta": {"content": "b"}, '
                        b'"finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}')
        await out.write_eof()
        return out

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url, stream=True)
        (out,) = await gen.generate(req())
        await gen.close()
    assert (out.text, out.finish_reason, out.completion_tokens, out.prompt_tokens) == ("ab", "stop", 2, 3)


async def test_api_key_is_sent_as_bearer_token():
    seen = []

    async def script(body, request):
        seen.append(request.headers.get("Authorization"))
        return response([choice(0, "ok")], usage(2, 1))

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url, model=MODEL, api_key="sk-test")
        await gen.generate(req())
        await gen.close()
    assert seen == ["Bearer sk-test"]


async def test_answer_that_is_not_json_raises_naming_the_url():
    async def script(body, request):
        return web.Response(text="<html>gateway</html>", content_type="text/html")

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url, model=MODEL)
        with pytest.raises(GenerationError, match=r"/v1/chat/completions: .*not JSON.*gateway"):
            await gen.generate(req())
        await gen.close()


async def test_error_in_the_old_vllm_shape_keeps_the_servers_message():
    async def script(body, request):
        return web.json_response({"object": "error", "message": "context length exceeded", "code": 400}, status=400)

    async with scripted_server(script) as (url, _):
        gen = OpenAIGenerator(url, model=MODEL)
        with pytest.raises(GenerationError, match="HTTP 400: context length exceeded"):
            await gen.generate(req())
        await gen.close()


# -- adapting to the server ---------------------------------------------------------------

async def test_refused_n_fans_out_once_and_is_remembered():
    async def script(body, request):
        if body["n"] > 1:
            return web.json_response({"error": {"message": "n > 1 is not supported"}}, status=400)
        return response([choice(0, f"seed {body.get('seed')}", token_ids=[1, 2])], usage(3, 2))

    async with scripted_server(script) as (url, bodies):
        gen = OpenAIGenerator(url)
        first = await gen.generate(req(n=3, seed=100))
        assert gen.fan_out is True
        second = await gen.generate(req(n=2))
        await gen.close()
    ns = [b["n"] for b in bodies]
    assert ns == [3, 1, 1, 1, 1, 1]  # one refused request, then only single ones
    # Each fanned-out sample gets its own seed, so seeded samples still differ.
    assert sorted(c.text for c in first) == ["seed 100", "seed 101", "seed 102"]
    assert [c.text for c in second] == ["seed None", "seed None"]
    assert all(c.completion_tokens == 2 for c in first + second)


async def test_server_that_ignores_n_is_fanned_out_for_the_rest():
    async def script(body, request):
        return response([choice(0, "only one", token_ids=[1])], usage(3, 1))

    async with scripted_server(script) as (url, bodies):
        gen = OpenAIGenerator(url)
        out = await gen.generate(req(n=3))
        await gen.close()
    assert [c.text for c in out] == ["only one"] * 3 and all(c.ok for c in out)
    assert [b["n"] for b in bodies] == [3, 1, 1] and gen.fan_out is True


async def test_bad_request_that_also_fails_singly_raises_and_is_not_taken_as_refusal():
    async def script(body, request):
        return web.json_response({"error": {"message": "prompt is too long"}}, status=400)

    async with scripted_server(script) as (url, bodies):
        gen = OpenAIGenerator(url)
        with pytest.raises(GenerationError, match="HTTP 400.*prompt is too long"):
            await gen.generate(req(n=2))
        await gen.close()
    assert gen.fan_out is False
    assert [b["n"] for b in bodies] == [2, 1, 1]


async def test_server_rejecting_return_token_ids_is_asked_again_without_it():
    async def script(body, request):
        if "return_token_ids" in body:
            return web.json_response({"error": {"message": "Unrecognized request argument: return_token_ids"}}, status=400)
        return response([choice(0, "ok")], usage(2, 1))

    async with scripted_server(script) as (url, bodies):
        gen = OpenAIGenerator(url)
        (out,) = await gen.generate(req())
        await gen.generate(req())
        await gen.close()
    assert out.text == "ok" and out.completion_tokens == 1
    assert ["return_token_ids" in b for b in bodies] == [True, False, False]


async def test_model_discovery_needs_exactly_one_served_model():
    async def script(body, request):
        return response([choice(0, "ok")], usage(2, 1))

    async with scripted_server(script, models=("a", "b")) as (url, _):
        gen = OpenAIGenerator(url)
        with pytest.raises(ValueError, match=r"serves 2 models \['a', 'b'\]; pass model=NAME"):
            await gen.check()
        named = OpenAIGenerator(url, model="c")
        with pytest.raises(ValueError, match="does not serve model 'c'"):
            await named.check()
        await gen.close()
        await named.close()


# -- unreachable servers ------------------------------------------------------------------

async def test_unreachable_server_fails_within_seconds_naming_the_url():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gen = OpenAIGenerator(f"http://127.0.0.1:{port}/v1", connect_timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(GenerationError, match=f"http://127.0.0.1:{port}/v1"):
        await gen.check()
    with pytest.raises(GenerationError, match=f"127.0.0.1:{port}"):
        await gen.generate(GenerationRequest("x", CHAT, 1, SamplingSettings()))
    assert time.monotonic() - start < 3.0
    await gen.close()


async def test_silent_server_fails_the_check_within_its_timeout():
    # A listener that accepts connections and never answers (a hung server).
    release = asyncio.Event()

    async def hang(reader, writer):
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gen = OpenAIGenerator(f"http://127.0.0.1:{port}", connect_timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(GenerationError, match=f"cannot reach .*127.0.0.1:{port}/v1"):
        await gen.check()
    elapsed = time.monotonic() - start
    release.set()
    server.close()
    await server.wait_closed()
    await gen.close()
    assert 0.9 < elapsed < 3.0  # 2 x connect_timeout_s to answer, not the 2-hour request timeout
