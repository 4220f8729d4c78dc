"""Generators: in-process vLLM engine, OpenAI-compatible client, weight-sync receivers.

The only package that imports vllm; its submodules import it lazily so that the method
(`megatron_pacore.pacore`) stays importable without an engine.
"""
from megatron_pacore.inference.base import GenerationError, Generator

__all__ = ["Generator", "GenerationError"]
