"""The actor and critic: Megatron-Core `GPTModel`s built from a Hugging Face config.

    groups = initialize_parallel(ParallelConfig(tp=2, device="cpu"))
    actor, info = build_actor(hf_config, groups, ModelOptions(precision="fp32"))
    load_hf_weights(actor, info, hf_dir, groups.config.tp, groups.tp_rank)   # checkpoint.loader
    logits = actor(input_ids, position_ids, None)      # [b, s, Vp / tp], vocab-parallel

Building returns the module and a `ModelInfo` (HF config, family, padded vocabulary, role,
tied or not), which callers pass explicitly to the loader, checkpointing and weight export;
nothing is attached to the Megatron module. Families (Qwen3, Qwen2/2.5, Llama 3) come from
`hf_config.family_for`. On CUDA the layers use the Transformer Engine spec (FP8
recipe/margin, sequence parallel, activation recomputation come from `ModelOptions` through
`TransformerConfig`); on CPU the local spec with all CUDA fusions off (DESIGN §3). The critic
(`training.critic`) is the same backbone with a scalar value head in place of the vocabulary
projection; it loads the actor's weights (everything but the head).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from megatron_pacore.hf_config import DTYPES as PRECISIONS
from megatron_pacore.hf_config import (
    Family, family_for, head_dim_of, num_query_groups_of, padded_vocab_size, tie_word_embeddings)
from megatron_pacore.training.parallel import ParallelGroups
from megatron_pacore.training.rope import hf_rope, rope_parameters

FP8_FORMATS = (None, "e4m3", "hybrid")
FP8_RECIPES = ("delayed", "tensorwise", "mxfp8", "blockwise")
RECOMPUTE = (None, "full", "selective")


@dataclass(frozen=True)
class ModelOptions:
    """How to build the Megatron model; defaults suit a GPU run in bf16."""

    precision: str = "bf16"
    """Parameter and compute dtype: fp32, bf16 or fp16."""
    transformer_engine: Optional[bool] = None
    """Use the Transformer Engine layer spec; None = on CUDA yes, on CPU no."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (needs tp > 1 and the TE spec)."""
    recompute_granularity: Optional[str] = None
    """Activation recomputation: None, 'full' or 'selective'."""
    recompute_method: Optional[str] = None
    """For 'full': 'uniform' or 'block'."""
    recompute_num_layers: Optional[int] = None
    """For 'full': layers per recompute unit (uniform) or recomputed layers per stage (block)."""
    recompute_modules: Optional[tuple[str, ...]] = None
    """For 'selective': e.g. ('core_attn', 'mlp'); None = Megatron's default ('core_attn')."""
    fp8: Optional[str] = None
    """FP8 format for TE layers: None, 'e4m3' or 'hybrid' (e4m3 forward, e5m2 backward)."""
    fp8_recipe: str = "delayed"
    """TE FP8 recipe: delayed, tensorwise, mxfp8 or blockwise."""
    fp8_margin: int = 0
    """Margin of the FP8 scaling factor (powers of two of headroom)."""
    fp8_amax_history_len: int = 1024
    """Delayed scaling: amax history length."""
    fp8_amax_compute_algo: str = "max"
    """Delayed scaling: 'max' or 'most_recent' over the history."""
    make_vocab_size_divisible_by: int = 128
    """Vocabulary padding unit; the padded size is a multiple of this times tp."""
    gradient_accumulation_fusion: bool = False
    """TE fused weight-gradient accumulation into `main_grad` (needs Megatron DDP wrapping)."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"model.precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        if self.fp8 not in FP8_FORMATS:
            raise ValueError(f"model.fp8 must be one of {FP8_FORMATS}, got {self.fp8!r}")
        if self.fp8_recipe not in FP8_RECIPES:
            raise ValueError(f"model.fp8_recipe must be one of {FP8_RECIPES}, got {self.fp8_recipe!r}")
        if self.fp8 is not None and self.transformer_engine is False:
            raise ValueError("model.fp8 needs model.transformer_engine=True")
        if self.fp8_margin < 0:
            raise ValueError(f"model.fp8_margin must be >= 0, got {self.fp8_margin}")
        if self.fp8_amax_compute_algo not in ("max", "most_recent"):
            raise ValueError(f"model.fp8_amax_compute_algo must be 'max' or 'most_recent', got {self.fp8_amax_compute_algo!r}")
        if self.recompute_granularity not in RECOMPUTE:
            raise ValueError(f"model.recompute_granularity must be one of {RECOMPUTE}, got {self.recompute_granularity!r}")
        if self.recompute_granularity == "full":
            if self.recompute_method not in ("uniform", "block"):
                raise ValueError("model.recompute_method must be 'uniform' or 'block' with full recompute")
            if not self.recompute_num_layers or self.recompute_num_layers < 1:
                raise ValueError("model.recompute_num_layers must be >= 1 with full recompute")
        if self.make_vocab_size_divisible_by < 1:
            raise ValueError("model.make_vocab_size_divisible_by must be >= 1")
        if self.gradient_accumulation_fusion and self.transformer_engine is False:
            raise ValueError("model.gradient_accumulation_fusion needs model.transformer_engine")
        from megatron_pacore.training.option_checks import check_model_options

        check_model_options(self)

    def use_te(self, groups: ParallelGroups) -> bool:
        if self.transformer_engine is None:
            return groups.config.device == "cuda"
        return self.transformer_engine


def _hf_dims(hf_config: Any) -> dict:
    return dict(
        num_layers=hf_config.num_hidden_layers,
        hidden_size=hf_config.hidden_size,
        ffn_hidden_size=hf_config.intermediate_size,
        num_attention_heads=hf_config.num_attention_heads,
        num_query_groups=num_query_groups_of(hf_config),
        kv_channels=head_dim_of(hf_config),
        layernorm_epsilon=hf_config.rms_norm_eps,
    )


def transformer_config(hf_config: Any, groups: ParallelGroups, opts: ModelOptions):
    """A megatron.core TransformerConfig equivalent to the Hugging Face config.

    Raises:
        ValueError: the layout does not divide the model (naming the field), or an option
            needs Transformer Engine / CUDA on a CPU run.
    """
    from megatron.core.transformer.transformer_config import TransformerConfig

    family = family_for(hf_config)
    par = groups.config
    dims = _hf_dims(hf_config)
    use_te = opts.use_te(groups)
    on_gpu = par.device == "cuda"
    if use_te and not on_gpu:
        raise ValueError("model.transformer_engine=True needs parallel.device=cuda")
    if dims["num_query_groups"] % par.tp:
        raise ValueError(f"parallel.tp={par.tp} must divide num_key_value_heads={dims['num_query_groups']}")
    if dims["num_layers"] % par.pp:
        raise ValueError(f"parallel.pp={par.pp} must divide num_hidden_layers={dims['num_layers']}")
    if par.cp > 1 and not use_te:
        raise ValueError("parallel.cp > 1 needs the Transformer Engine spec (CUDA)")
    if opts.sequence_parallel and not use_te:
        raise ValueError("model.sequence_parallel needs the Transformer Engine spec (CUDA)")
    if opts.fp8 and not use_te:
        raise ValueError("model.fp8 needs the Transformer Engine spec (CUDA)")
    from megatron_pacore.training.option_checks import check_layout

    check_layout(opts, par, torch.cuda.get_device_capability() if on_gpu else None)
    _, attention_scaling = hf_rope(hf_config)
    dtype = PRECISIONS[opts.precision]
    recompute = {}
    if opts.recompute_granularity:
        recompute = dict(recompute_granularity=opts.recompute_granularity)
        if opts.recompute_granularity == "full":
            recompute.update(recompute_method=opts.recompute_method,
                             recompute_num_layers=opts.recompute_num_layers)
        elif opts.recompute_modules:
            recompute.update(recompute_modules=list(opts.recompute_modules))
    fp8 = {}
    if opts.fp8:
        fp8 = dict(fp8=opts.fp8, fp8_recipe=opts.fp8_recipe, fp8_margin=opts.fp8_margin,
                   fp8_amax_history_len=opts.fp8_amax_history_len,
                   fp8_amax_compute_algo=opts.fp8_amax_compute_algo)
    return TransformerConfig(
        **dims,
        normalization="RMSNorm",
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=family.qkv_bias,
        qk_layernorm=family.qk_norm,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=getattr(hf_config, "initializer_range", 0.02),
        softmax_scale=attention_scaling**2 / math.sqrt(dims["kv_channels"]),
        attention_softmax_in_fp32=True,
        apply_query_key_layer_scaling=False,
        tensor_model_parallel_size=par.tp,
        pipeline_model_parallel_size=par.pp,
        context_parallel_size=par.cp,
        sequence_parallel=opts.sequence_parallel and par.tp > 1,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=not on_gpu,
        # Every weight is loaded from a checkpoint, but Megatron-Core 0.16's Column/Row-
        # parallel linears and vocab-parallel embedding set their `tensor_model_parallel`
        # attributes only inside the initialisation: without it, every sharded weight looks
        # like a TP duplicate, and the optimizer's global gradient norm (hence clipping)
        # silently drops the shards of TP ranks > 0 (tests/distributed/worker_update.py).
        perform_initialization=True,
        # CUDA-only fusions: on where the kernels exist, off on CPU (DESIGN §3).
        gradient_accumulation_fusion=use_te and opts.gradient_accumulation_fusion,
        bias_activation_fusion=on_gpu,
        bias_dropout_fusion=on_gpu,
        masked_softmax_fusion=on_gpu,
        apply_rope_fusion=use_te,
        persist_layer_norm=on_gpu,
        **recompute,
        **fp8,
    )


def layer_spec(family: Family, use_te: bool):
    """Transformer Engine spec on GPU, local (pure Megatron-Core) spec otherwise."""
    from megatron.core.models.gpt import gpt_layer_specs as specs

    if use_te:
        return specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=family.qk_norm)
    return specs.get_gpt_layer_local_spec(qk_layernorm=family.qk_norm, normalization="RMSNorm")


ROLES = ("actor", "critic")


@dataclass(frozen=True)
class ModelInfo:
    """What callers of a built model need to know besides the module itself."""

    hf_config: Any
    """The Hugging Face config the model was built from (saved with its checkpoints)."""
    family: Family
    """Model family (architecture flags; the HF <-> Megatron table is chosen by its name)."""
    padded_vocab_size: int
    """Rows of the embedding (and of the actor's output layer): the vocabulary padded for TP."""
    role: str
    """'actor' (vocabulary logits) or 'critic' (a scalar value per token)."""
    tied: bool
    """The output layer is the input embedding (an actor built from a tied config)."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"ModelInfo.role must be one of {ROLES}, got {self.role!r}")
        if self.padded_vocab_size < self.hf_config.vocab_size:
            raise ValueError(f"ModelInfo.padded_vocab_size={self.padded_vocab_size} < vocab_size="
                             f"{self.hf_config.vocab_size}")

    @property
    def is_critic(self) -> bool:
        return self.role == "critic"


def build_gpt(hf_config: Any, groups: ParallelGroups, opts: ModelOptions, padded_vocab: Optional[int],
              tie: bool, post_process: Optional[bool] = None):
    """This rank's stage of a Megatron `GPTModel` equivalent to the HF config, and its padded
    vocabulary size. post_process (default: on the last stage) adds the final norm and the
    vocabulary projection; the critic builds its backbone without them."""
    from megatron.core.models.gpt import GPTModel

    family = family_for(hf_config)
    config = transformer_config(hf_config, groups, opts)
    tp = groups.config.tp
    if padded_vocab is None:
        padded_vocab = padded_vocab_size(hf_config.vocab_size, tp, opts.make_vocab_size_divisible_by)
    if padded_vocab % tp or padded_vocab < hf_config.vocab_size:
        raise ValueError(f"padded vocabulary {padded_vocab} must be >= vocab_size and divisible by tp={tp}")
    inv_freq, _ = hf_rope(hf_config)
    model = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(family, opts.use_te(groups)),
        vocab_size=padded_vocab,
        max_sequence_length=hf_config.max_position_embeddings,
        pre_process=groups.is_first_stage,
        post_process=groups.is_last_stage if post_process is None else post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=tie,
        position_embedding_type="rope",
        rotary_base=int(rope_base(hf_config)),
        pg_collection=groups.pg_collection,
    )
    # Named special case "hf_rope": Hugging Face's frequencies (llama3, yarn, linear, default).
    model.rotary_pos_emb.inv_freq = inv_freq.to(model.rotary_pos_emb.inv_freq.device)
    return model, padded_vocab


def rope_base(hf_config: Any) -> float:
    return float(rope_parameters(hf_config)["rope_theta"])


def build_actor(hf_config: Any, groups: ParallelGroups, opts: ModelOptions,
                padded_vocab: Optional[int] = None):
    """This rank's pipeline stage of the actor GPTModel (weights uninitialised: load them),
    and its `ModelInfo`: `actor, info = build_actor(...)`.

    Forward: input_ids [b, s] -> logits [b, s, Vp/tp] (last stage; vocab-parallel, padded
    vocabulary); hidden states [s, b, h] on other stages.
    """
    tie = tie_word_embeddings(hf_config)
    model, padded = build_gpt(hf_config, groups, opts, padded_vocab, tie)
    return model, ModelInfo(hf_config=hf_config, family=family_for(hf_config), padded_vocab_size=padded,
                            role="actor", tied=tie)


def unwrap(model):
    """The actor GPTModel or the CriticModel inside Megatron's wrappers (DDP, Float16Module),
    which hold the wrapped model as `.module`."""
    while hasattr(model, "module"):
        model = model.module
    return model
