"""`--model DIR_OR_URL` (config.GenerationOptions) to a ModelGenerator."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from megatron_pacore.inference.base import ModelGenerator

if TYPE_CHECKING:
    from megatron_pacore.config import GenerationOptions


def is_url(model: str) -> bool:
    return model.startswith(("http://", "https://"))


def make_generator(
    model: str,
    vllm_args: Optional[dict[str, Any]] = None,
    served_model_name: Optional[str] = None,
    stream: bool = False,
    chat_template_kwargs: Optional[dict[str, Any]] = None,
) -> ModelGenerator:
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


async def open_generator(options: "GenerationOptions") -> ModelGenerator:
    """`make_generator` from the options, then its reachability check (closed again if the
    check fails)."""
    generator = make_generator(options.model, options.vllm_args or None, options.server.served_model_name,
                               options.server.stream)
    try:
        await generator.check()
    except BaseException:
        await generator.close()
        raise
    return generator


Tokenize = Callable[[str], list[int]]
Detokenize = Callable[[list[int]], str]


def tokenizer_fns(generator: ModelGenerator) -> tuple[Optional[Tokenize], Optional[Detokenize]]:
    """(tokenize, detokenize) with the model's tokenizer, for the exact `max_message_tokens`
    bound; (None, None) where it has none (a server), and the bound counts words."""
    tok = generator.tokenizer
    if tok is None:
        return None, None
    return (lambda s: tok.encode(s, add_special_tokens=False)), (lambda ids: tok.decode(ids))
