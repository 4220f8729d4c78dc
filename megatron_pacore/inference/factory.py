"""make_generator: `--model DIR_OR_URL` to a Generator."""
from __future__ import annotations

from typing import Any, Callable, Optional

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


async def open_generator(
    model: str,
    vllm_args: Optional[dict[str, Any]] = None,
    served_model_name: Optional[str] = None,
    stream: bool = False,
) -> Generator:
    """`make_generator`, then for a server a reachability check, so that a wrong URL fails in
    seconds (GenerationError naming it) rather than after the runner's retries."""
    generator = make_generator(model, vllm_args, served_model_name, stream)
    check = getattr(generator, "check", None)
    if check is not None:
        try:
            await check()
        except BaseException:
            await generator.close()
            raise
    return generator


Tokenize = Callable[[str], list[int]]
Detokenize = Callable[[list[int]], str]


def tokenizer_fns(generator: Any) -> tuple[Optional[Tokenize], Optional[Detokenize]]:
    """(tokenize, detokenize) with an in-process engine's tokenizer, for the exact
    `max_message_tokens` bound; (None, None) for a server, where the bound counts words."""
    tok = getattr(generator, "tokenizer", None)
    if tok is None:
        return None, None
    return (lambda s: tok.encode(s, add_special_tokens=False)), (lambda ids: tok.decode(ids))
