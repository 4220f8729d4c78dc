"""OpenAIGenerator and the PaCoRe runner against a real vLLM OpenAI server of the tiny model.

One server per session (fixture `vllm_server`); token counts are checked against the
tokenizer and against `max_tokens` with `ignore_eos`, so they cannot agree by construction.
"""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from helpers.text import assert_text_is_decoded_tokens
from megatron_pacore.inference.openai_client import OpenAIGenerator
from megatron_pacore.pacore import PaCoReRunner, RoundSchedule, RunnerConfig, render_synthesis_prompt
from megatron_pacore.types import GenerationRequest, Problem, SamplingSettings

pytestmark = pytest.mark.server

CHAT = [{"role": "user", "content": "Find the sum of the first 3 primes."}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def prompt_len(tokenizer, messages) -> int:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


async def test_check_discovers_the_served_model(vllm_server):
    gen = OpenAIGenerator(vllm_server.url + "/v1/chat/completions")
    await gen.check()
    await gen.close()
    assert gen.model == str(vllm_server.model_dir)


async def test_n3_with_ignore_eos_gives_exactly_max_tokens_each(vllm_server, tokenizer):
    gen = OpenAIGenerator(vllm_server.url)
    out = await gen.generate(GenerationRequest("n3", CHAT, 3, SamplingSettings(max_tokens=12, ignore_eos=True)))
    await gen.close()
    assert len(out) == 3 and all(c.ok for c in out)
    assert [c.completion_tokens for c in out] == [12, 12, 12]
    assert [c.finish_reason for c in out] == ["length"] * 3
    assert [c.prompt_tokens for c in out] == [prompt_len(tokenizer, CHAT)] * 3
    for c in out:  # the ids are the text's tokens
        assert_text_is_decoded_tokens(c.text, tokenizer.decode(c.token_ids, skip_special_tokens=True))
    assert len({tuple(c.token_ids) for c in out}) == 3  # three samples, not one copied


async def test_n3_counts_match_the_tokens_of_each_text(vllm_server, tokenizer):
    gen = OpenAIGenerator(vllm_server.url)
    out = await gen.generate(GenerationRequest("n3", CHAT, 3, SamplingSettings(max_tokens=40)))
    await gen.close()
    assert len(out) == 3 and all(c.ok for c in out)
    for c in out:
        assert c.completion_tokens == len(c.token_ids) >= 1
        assert tokenizer.decode(c.token_ids, skip_special_tokens=True) == c.text
        # "length" exactly when the sample used its whole budget.
        assert (c.finish_reason == "length") == (c.completion_tokens == 40)
        assert c.finish_reason in ("stop", "length")


async def test_aggregate_usage_fallback_sums_exactly_on_vllm(vllm_server):
    gen = OpenAIGenerator(vllm_server.url)
    gen.ask_token_ids = False  # as against a server without per-choice token ids
    out = await gen.generate(GenerationRequest("agg", CHAT, 3, SamplingSettings(max_tokens=10, ignore_eos=True)))
    await gen.close()
    assert all(c.token_ids is None for c in out)
    assert sum(c.completion_tokens for c in out) == 30


async def test_streaming_and_non_streaming_agree(vllm_server):
    request = GenerationRequest("greedy", CHAT, 2, SamplingSettings(max_tokens=16, temperature=0.0))
    results = {}
    for stream in (False, True):
        gen = OpenAIGenerator(vllm_server.url, stream=stream)
        results[stream] = await gen.generate(request)
        await gen.close()
    plain, streamed = results[False], results[True]
    assert len(plain) == len(streamed) == 2
    for a, b in zip(plain, streamed):
        assert (a.text, a.token_ids, a.completion_tokens, a.prompt_tokens, a.finish_reason, a.error) == (
            b.text, b.token_ids, b.completion_tokens, b.prompt_tokens, b.finish_reason, b.error
        )
    assert plain[0].text == plain[1].text and plain[0].completion_tokens >= 1  # greedy


class Recorder:
    """Forwards to a Generator and keeps every request, to inspect the prompts sent."""

    def __init__(self, inner):
        self.inner = inner
        self.requests: list[GenerationRequest] = []

    async def generate(self, request):
        self.requests.append(request)
        return await self.inner.generate(request)

    async def close(self):
        await self.inner.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_pacore_run_through_the_server(vllm_server, tokenizer, stream):
    problems = [
        Problem(id=f"p{i}", messages=[{"role": "user", "content": text}], problem=text)
        for i, text in enumerate(["What is 2+3?", "Name a prime above 10."])
    ]
    gen = Recorder(OpenAIGenerator(vllm_server.url, stream=stream))
    config = RunnerConfig(
        schedule=RoundSchedule.from_widths("2"),
        sampling=SamplingSettings(max_tokens=24, temperature=1.0),
        max_retries=0,
    )
    results = {r.id: r async for r in PaCoReRunner(gen, config).run(problems)}
    await gen.close()

    assert sorted(results) == ["p0", "p1"]
    for problem in problems:
        result = results[problem.id]
        assert result.status == "ok", result.error
        assert [r.width for r in result.rounds] == [2, 1]
        assert [len(r.trajectories) for r in result.rounds] == [2, 1]
        all_trajs = [t for r in result.rounds for t in r.trajectories]
        assert all(t.ok and 1 <= t.completion_tokens <= 24 for t in all_trajs)
        assert result.test_time_tokens == sum(t.completion_tokens for t in all_trajs)
        assert result.final_response == result.rounds[1].trajectories[0].text

        # Round 2 sent the synthesis prompt built from round 1's messages, in the order recorded.
        r1, r2 = result.rounds
        sent = [q for q in gen.requests if q.request_id == f"{problem.id}/r2"]
        assert len(sent) == 1 and sent[0].n == 1
        last_user = sent[0].messages[-1]["content"]
        references = [r1.trajectories[i].message for i in r2.reference_order]
        assert last_user == render_synthesis_prompt(problem.problem, references)
        assert "Reference 1:" in last_user and "Original Problem:\n" + problem.problem in last_user
        # The server counted exactly that prompt.
        assert r2.prompt_tokens == prompt_len(tokenizer, sent[0].messages)

    # The server itself renders the round-2 prompt with the references in it.
    async with httpx.AsyncClient() as client:
        body = {
            "model": str(vllm_server.model_dir), "messages": sent[0].messages, "max_tokens": 1,
            "return_prompt_text": True,
        }
        answer = (await client.post(f"{vllm_server.url}/v1/chat/completions", json=body, timeout=60)).json()
    assert "Reference 1:" in answer["prompt_text"]
    assert answer["usage"]["prompt_tokens"] == results[problems[-1].id].rounds[1].prompt_tokens
