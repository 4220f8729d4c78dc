"""Tiny Hugging Face checkpoints and tokenizers, made offline and deterministically.

No model hub is reachable in CI, so tests, demos and benchmarks make their own model with
`make_tiny_model(out, arch, seed)` (CLI: `tools/make_tiny_model.py`): the Qwen3 architecture
(GQA, q/k RMSNorm, tied embeddings) by default, Qwen2 (qkv bias, untied) and Llama 3 (llama3
rope scaling, untied). head_dim is 64 (vLLM's CPU attention refuses smaller). The tokenizer is a
byte-level BPE trained on a fixed built-in corpus, with ChatML specials, `<think>`/`</think>`
as ordinary added tokens (so they survive detokenisation, as in Qwen3) and a chat template.

Every tensor is random, norm scales and biases included (`randomise_parameters`), so that a
conversion that swaps two norms, drops a bias or puts it on the wrong rows changes the logits
that parity and round-trip tests compare. The same seed gives the same bytes on every run.
"""
from __future__ import annotations

import random
from pathlib import Path

ARCHS = ("qwen3", "qwen2", "llama")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]
VOCAB_SIZE = 1000  # BPE vocabulary incl. specials; <think>, </think> come on top.

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _corpus(seed: int) -> list[str]:
    """Deterministic training text: words, numbers, LaTeX and reasoning markup."""
    rng = random.Random(seed)
    words = (
        "the a of to and is in that it for we find sum answer problem let so then number "
        "integer prime value solve equation triangle area square root real positive total "
        "therefore thus final compute each step first second reference response solution "
        "original given provide analyze your own comprehensive based above list job these"
    ).split()
    latex = ["\\boxed{", "\\frac{", "\\sqrt{", "\\cdot", "^{2}", "$", "}", "=", "+", "-", "(", ")"]
    lines = []
    for _ in range(4000):
        parts = []
        for _ in range(rng.randint(4, 16)):
            u = rng.random()
            if u < 0.7:
                parts.append(rng.choice(words))
            elif u < 0.85:
                parts.append(str(rng.randint(0, 999)))
            else:
                parts.append(rng.choice(latex))
        lines.append(" ".join(parts) + rng.choice([".", "?", "\n", ":"]))
    return lines


def build_tokenizer(out: Path, seed: int):
    """Train the byte-level BPE on `_corpus(seed)`, add the chat template, save it to `out`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=8192,
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out)
    return hf


def build_config(arch: str, vocab_size: int, eos_id: int, pad_id: int):
    """The `transformers` config of the tiny `arch`: 2 layers, 4 query / 2 key-value heads."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=vocab_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA; 2 query groups split evenly at TP=2
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=eos_id,
        dtype="float32",
    )
    if arch == "qwen3":
        # hidden 128 with an explicit head_dim of 64 (Qwen3 decouples the two).
        return Qwen3Config(hidden_size=128, intermediate_size=256, head_dim=64,
                           tie_word_embeddings=True, rope_theta=1_000_000.0, **common)
    if arch == "qwen2":
        # Qwen2 derives head_dim = hidden / heads = 64; attention has qkv bias.
        return Qwen2Config(hidden_size=256, intermediate_size=512,
                           tie_word_embeddings=False, rope_theta=1_000_000.0, **common)
    if arch == "llama":
        cfg = LlamaConfig(hidden_size=256, intermediate_size=512, tie_word_embeddings=False, **common)
        cfg.rope_parameters = {
            "rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 1024,
        }
        return cfg
    raise ValueError(f"--arch must be one of {ARCHS}, got {arch!r}")


def randomise_parameters(model, seed: int) -> None:
    """Draw every parameter of `model` in place from a generator seeded with `seed`.

    Matrices [out, in] (projections, embeddings) ~ N(0, 0.08^2): wider than the default 0.02
    init, so the tiny model's output distributions are peaked and non-uniform and sampling and
    log-prob tests see realistic variation. Norm scales [d] ~ U(0.5, 1.5), biases [d] ~
    N(0, 0.1^2): each differs from its defaults (1 and 0) and from every other tensor, so
    swapped or misplaced ones are visible. Parameters are drawn in sorted-name order (a tied
    lm_head is the embedding and is drawn once).

    Raises:
        ValueError: a parameter that is none of the three kinds (a new architecture must say
            how its tensors are drawn rather than keep an init a test cannot tell apart).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.08)
            elif p.dim() == 1 and name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.dim() == 1 and name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                raise ValueError(f"randomise_parameters: no rule for {name} of shape {tuple(p.shape)}")


def make_tiny_model(out: str | Path, arch: str = "qwen3", seed: int = 0) -> Path:
    """Write checkpoint (safetensors, fp32) + tokenizer + generation config to `out`; return it.

    Raises:
        ValueError: `arch` not one of ARCHS.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, seed)
    eos_id = tok.convert_tokens_to_ids("<|im_end|>")
    pad_id = tok.convert_tokens_to_ids("<|endoftext|>")
    config = build_config(arch, len(tok), eos_id, pad_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomise_parameters(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=eos_id).save_pretrained(out)
    return out
