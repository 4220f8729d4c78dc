"""make_generator: `--model DIR_OR_URL` to a Generator."""
from __future__ import annotations

from typing import Any, Optional

from megatron_pacore.inference.base import Generator


def is_url(model: str) -> bool:
    return model.startswith(("http://", "https://"))


def make_generator(
    model: str,
    vllm_args: Optional[dict[str, Any]] = None,
    served_model_name: Optional[str] = None,
    stream: bool = False,
    chat_template_kwargs: Optional[dict[str, Any]] = None,
) -> Generator:
    """An OpenAI-compatible client for an http(s) URL, else an in-process vLLM engine over the
    checkpoint directory `model` (engine options in `vllm_args`)."""
    if is_url(model):
        from megatron_pacore.inference.openai_client import OpenAIGenerator

        if vllm_args:
            raise ValueError(
                f"--vllm-arg {sorted(vllm_args)} configure an in-process engine; a server at {model} "
                "takes its options where it is started"
            )
        return OpenAIGenerator(model, model=served_model_name, stream=stream)
    from megatron_pacore.inference.vllm_engine import VLLMGenerator

    return VLLMGenerator(model, engine_args=vllm_args, chat_template_kwargs=chat_template_kwargs)
