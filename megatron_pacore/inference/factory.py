"""`--model DIR_OR_URL` (config.GenerationOptions.engine_kwargs()) to a ModelGenerator.

This package does not import config/ (config's checks import the method, pacore/, whose
runner imports this package's Generator protocol): the caller passes the options' values.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from megatron_pacore.inference.base import ModelGenerator


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


async def open_generator(**kwargs: Any) -> ModelGenerator:
    """`make_generator(**kwargs)`, then its reachability check (closed again if the check
    fails). kwargs: `GenerationOptions.engine_kwargs()`."""
    generator = make_generator(**kwargs)
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
