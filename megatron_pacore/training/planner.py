"""Per-GPU memory of a PaCoRe PPO run and the TP/PP/CP/DP layout that fits it.

    shape = ModelShape.from_hf(hf_config)
    cfg = PlanConfig(seq_len=131072, gpus_per_node=8, gpu_mem_gb=80, nodes=4)
    plan = choose_layout(shape, cfg)         # Plan(layout, recompute, memory, ...)
    plan.memory.components                   # {'actor/params': bytes, ..., 'vllm/kv_cache': bytes}

What is counted on one GPU (the worst pipeline stage), colocated placement (DESIGN §2): the
actor and the critic (each: parameters, gradients, distributed-optimizer states, and during
its own update its activations), and vLLM (weights and KV cache), which sleeps (weights
offloaded, KV cache freed) while the models train. So two peaks must fit:
    training: actor states + critic states + max(actor, critic activations)
    rollout:  actor states + critic states + vLLM weights + KV cache of >= 1 full sequence
Everything is in bytes. Estimates, not measurements: CUDA context, NCCL buffers, allocator
fragmentation and temporary buffers are covered by `memory_fraction` of the GPU only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from megatron_pacore.hf_config import padded_vocab_size

RECOMPUTE = ("selective", "full")
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """The dimensions of a decoder-only model (Qwen3, Qwen2/2.5, Llama 3)."""

    hidden: int
    """h: hidden size."""
    layers: int
    """L: transformer layers."""
    heads: int
    """a: attention (query) heads."""
    kv_heads: int
    """g: key/value heads (GQA query groups)."""
    head_dim: int
    """d: size of one head."""
    ffn: int
    """f: MLP intermediate size (SwiGLU: gate and up are f each)."""
    vocab: int
    """V: vocabulary size (unpadded)."""
    tied: bool
    """Input embedding and output layer share one weight."""
    qkv_bias: bool = False
    """Attention q/k/v projections have biases (Qwen2)."""
    qk_norm: bool = False
    """RMSNorm over each query/key head (Qwen3)."""

    @classmethod
    def from_hf(cls, hf_config: Any) -> "ModelShape":
        from megatron_pacore.hf_config import family_for, head_dim_of, num_query_groups_of, tie_word_embeddings

        family = family_for(hf_config)
        return cls(hidden=hf_config.hidden_size, layers=hf_config.num_hidden_layers,
                   heads=hf_config.num_attention_heads, kv_heads=num_query_groups_of(hf_config),
                   head_dim=head_dim_of(hf_config), ffn=hf_config.intermediate_size,
                   vocab=hf_config.vocab_size, tied=tie_word_embeddings(hf_config),
                   qkv_bias=family.qkv_bias, qk_norm=family.qk_norm)

    def layer_params(self, tp: int) -> int:
        """Parameters of one transformer layer on one TP rank (Megatron's sharding: q/k/v,
        attention output and both MLP GEMMs split over tp; norms replicated)."""
        h, d, a, g, f = self.hidden, self.head_dim, self.heads, self.kv_heads, self.ffn
        qkv = (a + 2 * g) * d * h + ((a + 2 * g) * d if self.qkv_bias else 0)
        sharded = qkv + a * d * h + 3 * f * h          # linear_qkv, linear_proj, fc1 (gate+up), fc2
        replicated = 2 * h + (2 * d if self.qk_norm else 0)  # input/pre-MLP norms, q/k norms
        return sharded // tp + replicated

    def total_params(self) -> int:
        """Parameters of the Hugging Face model (no vocabulary padding)."""
        emb = self.vocab * self.hidden
        return self.layers * self.layer_params(1) + self.hidden + emb * (1 if self.tied else 2)


@dataclass(frozen=True, kw_only=True)
class Layout:
    """A parallel layout: world = tp * pp * cp * dp."""

    tp: int
    pp: int
    cp: int
    dp: int

    @property
    def model_parallel(self) -> int:
        return self.tp * self.pp * self.cp


@dataclass(frozen=True, kw_only=True)
class PlanConfig:
    """The run and the machines to plan for."""

    seq_len: int
    """Tokens of one (packed) training sequence, e.g. 131072."""
    gpus_per_node: int = 8
    """GPUs per node (TP stays inside a node)."""
    gpu_mem_gb: float = 80.0
    """Memory of one GPU in GB (1e9 bytes)."""
    nodes: int = 1
    """Nodes of the job."""
    memory_fraction: float = 0.9
    """Share of the GPU the estimate may fill (the rest: CUDA context, NCCL, fragmentation)."""
    precision: str = "bf16"
    """Parameter and activation dtype of actor and critic."""
    grad_reduce_in_fp32: bool = True
    """Megatron DDP keeps gradients in fp32 (else in the parameter dtype)."""
    micro_batch: int = 1
    """Sequences per micro-batch."""
    rollout_batch: int = 1024
    """Sequences generated per PPO iteration (paper: 16 problems x 64 samples)."""
    vllm_tp: Optional[int] = None
    """vLLM tensor parallel size; None = the training tp (one engine per TP group)."""
    vllm_dtype: str = "bf16"
    """dtype of vLLM's weights and KV cache."""

    def __post_init__(self) -> None:
        for name in ("seq_len", "gpus_per_node", "nodes", "micro_batch", "rollout_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"plan.{name} must be >= 1, got {getattr(self, name)}")
        if self.gpu_mem_gb <= 0:
            raise ValueError(f"plan.gpu_mem_gb must be > 0, got {self.gpu_mem_gb}")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(f"plan.memory_fraction must be in (0, 1], got {self.memory_fraction}")
        for name in ("precision", "vllm_dtype"):
            if getattr(self, name) not in BYTES:
                raise ValueError(f"plan.{name} must be one of {tuple(BYTES)}, got {getattr(self, name)!r}")

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def usable_bytes(self) -> float:
        return self.gpu_mem_gb * 1e9 * self.memory_fraction


def stage_params(shape: ModelShape, layout: Layout, *, critic: bool) -> int:
    """Parameters on one GPU of the largest pipeline stage (first or last).

    First stage: L/pp layers + the vocab-parallel embedding (V_pad * h / tp). Last stage:
    L/pp layers + final norm + the output layer (actor: V_pad * h / tp, shared with the
    embedding when tied and pp == 1; critic: the replicated value head, h + 1).
    """
    tp, pp = layout.tp, layout.pp
    v_pad = padded_vocab_size(shape.vocab, tp)
    layers = (shape.layers // pp) * shape.layer_params(tp)
    emb = v_pad * shape.hidden // tp
    head = shape.hidden + 1 if critic else (0 if shape.tied and pp == 1 else emb)
    first = layers + emb + (shape.hidden + head if pp == 1 else 0)
    last = layers + shape.hidden + head
    return max(first, last)


def state_bytes(shape: ModelShape, layout: Layout, cfg: PlanConfig, *, critic: bool) -> dict[str, int]:
    """Parameters, gradients and Adam states of one model on one GPU.

    Megatron's distributed optimizer (docs: "Distributed Optimizer", bytes per parameter):
    16-bit parameters (2) + fp32 gradients (4) on every rank, and the fp32 main copy (4) +
    Adam exp_avg (4) + exp_avg_sq (4) sharded over the data-parallel ranks, which with
    context parallelism are the dp * cp ranks (Megatron's dp-cp group): 6 + 12 / (dp * cp).
    fp32 parameters need no main copy: 8 / (dp * cp) of optimizer state.
    """
    n = stage_params(shape, layout, critic=critic)
    p_bytes = BYTES[cfg.precision]
    g_bytes = 4 if cfg.grad_reduce_in_fp32 else p_bytes
    main_copy = 4 if p_bytes < 4 else 0
    shards = layout.dp * layout.cp
    return {"params": n * p_bytes, "grads": n * g_bytes,
            "optimizer": math.ceil(n * (main_copy + 8) / shards)}


def layer_activation_bytes(shape: ModelShape, layout: Layout, cfg: PlanConfig) -> int:
    """Activations one layer keeps for backward, per micro-batch, on one GPU.

    Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"),
    Eq. 1-2: s*b*h*(34 + 5*a*s/h) bytes per layer in 16-bit, of which 5as/h is the attention
    score/softmax/dropout part that flash/fused attention (TE) never stores, and 34 counts GPT's
    LayerNorm, dropout masks and a 4h GeLU MLP. For our layers (RMSNorm, no dropout, GQA,
    SwiGLU of size f), counting the same way, per token: the two norm inputs and two GEMM
    inputs (4h), q, k, v (a*d + 2*g*d), the attention output (a*d), the SwiGLU input (2f) and
    output (f): 4h + 2ad + 2gd + 3f elements. With tensor + sequence parallelism everything
    is split over tp (Korthikanti Eq. 5); context parallelism splits s over cp.
    """
    h, a, g, d, f = shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.ffn
    tokens = cfg.micro_batch * cfg.seq_len / layout.cp
    elements = 4 * h + 2 * a * d + 2 * g * d + 3 * f
    return math.ceil(tokens * elements * BYTES[cfg.precision] / layout.tp)


def activation_bytes(shape: ModelShape, layout: Layout, cfg: PlanConfig, recompute: str,
                     *, critic: bool) -> dict[str, int]:
    """Activations of one model's training step on one GPU, worst pipeline stage.

    - selective: Megatron's default selective recomputation (core attention); with TE's fused
      attention the kept activations are the per-layer count above (Korthikanti Eq. 6).
    - full: each layer keeps only its input, 2*s*b*h/tp bytes with SP (Korthikanti §4.1), and
      one layer's activations live while it is recomputed in backward.
    1F1B pipelining keeps pp - k micro-batches in flight on stage k, so the first stage holds
    pp micro-batches of its L/pp layers (Narayanan et al. 2021, §2.2; Korthikanti §4.2.3).
    The last stage adds the logits: the actor's [s/cp, V_pad/tp] logits in 16-bit plus the
    fp32 log-softmax and its gradient (2 + 4 + 4 bytes each); the critic's values are tiny.
    """
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute must be one of {RECOMPUTE}, got {recompute!r}")
    per_layer = layer_activation_bytes(shape, layout, cfg)
    tokens = cfg.micro_batch * cfg.seq_len / layout.cp
    stage_layers = shape.layers // layout.pp
    if recompute == "full":
        kept = math.ceil(tokens * shape.hidden * BYTES[cfg.precision] / layout.tp)
        stage = lambda in_flight: stage_layers * in_flight * kept + per_layer  # noqa: E731
    else:
        stage = lambda in_flight: stage_layers * in_flight * per_layer  # noqa: E731
    logits = 0 if critic else math.ceil(tokens * padded_vocab_size(shape.vocab, layout.tp) / layout.tp * 10)
    first, last = stage(layout.pp), stage(1) + logits
    if layout.pp == 1:
        return {"layers": first, "logits": logits}
    return {"layers": first, "logits": 0} if first >= last else {"layers": stage(1), "logits": logits}


def vllm_bytes(shape: ModelShape, layout: Layout, cfg: PlanConfig) -> dict[str, int]:
    """vLLM's weights and KV cache on one GPU.

    Weights: all parameters split over vllm_tp (vLLM shards every linear layer and the
    vocabulary). KV cache (vLLM paged attention): per token 2 (K and V) * L * kv_heads * d
    elements; a TP rank holds ceil(g / vllm_tp) KV heads (vLLM replicates KV heads when
    vllm_tp > g). The rollout batch is spread over world / vllm_tp engines; `kv_cache` is what
    the batch needs at full length, `kv_cache_per_sequence` one full-length sequence.
    """
    vtp = cfg.vllm_tp or layout.tp
    b = BYTES[cfg.vllm_dtype]
    per_token = 2 * shape.layers * math.ceil(shape.kv_heads / vtp) * shape.head_dim * b
    engines = max(1, cfg.world // vtp)
    seqs = math.ceil(cfg.rollout_batch / engines)
    return {"weights": math.ceil(shape.total_params() * b / vtp),
            "kv_cache_per_sequence": per_token * cfg.seq_len,
            "kv_cache": per_token * cfg.seq_len * seqs}


@dataclass(frozen=True)
class Memory:
    """Per-GPU bytes of each component and the two peaks."""

    components: dict[str, int]
    training_peak: int
    rollout_peak: int
    usable: int
    rollout_sequences: int
    """Full-length sequences whose KV cache fits beside the resident states (per engine rank)."""

    @property
    def fits(self) -> bool:
        return self.training_peak <= self.usable and self.rollout_peak <= self.usable


def estimate(shape: ModelShape, layout: Layout, cfg: PlanConfig, recompute: str) -> Memory:
    parts: dict[str, int] = {}
    acts = {}
    for role in ("actor", "critic"):
        critic = role == "critic"
        for k, v in state_bytes(shape, layout, cfg, critic=critic).items():
            parts[f"{role}/{k}"] = v
        a = activation_bytes(shape, layout, cfg, recompute, critic=critic)
        parts[f"{role}/activations"] = a["layers"]
        if not critic:
            parts["actor/logits"] = a["logits"]
        acts[role] = sum(a.values())
    for k, v in vllm_bytes(shape, layout, cfg).items():
        parts[f"vllm/{k}"] = v
    states = sum(v for k, v in parts.items() if k.split("/")[1] in ("params", "grads", "optimizer"))
    usable = int(cfg.usable_bytes)
    free_for_kv = usable - states - parts["vllm/weights"]
    return Memory(components=parts,
                  training_peak=states + max(acts.values()),
                  rollout_peak=states + parts["vllm/weights"] + parts["vllm/kv_cache_per_sequence"],
                  usable=usable,
                  rollout_sequences=max(0, free_for_kv // parts["vllm/kv_cache_per_sequence"]))


@dataclass(frozen=True)
class Plan:
    layout: Layout
    recompute: str
    memory: Memory
    considered: int = 0
    """Layouts evaluated."""
    alternatives: list = field(default_factory=list)
    """Other fitting (layout, recompute) pairs, best first (at most 5)."""


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def candidate_layouts(shape: ModelShape, cfg: PlanConfig) -> list[Layout]:
    """Layouts Megatron accepts: tp inside a node dividing heads and KV heads, pp dividing the
    layers, cp a power of two with seq_len % (2*cp) == 0 (CP load balancing), dp the rest."""
    out = []
    for tp in _divisors(cfg.gpus_per_node):
        if shape.heads % tp or shape.kv_heads % tp:
            continue
        for pp in _divisors(shape.layers):
            cp = 1
            while tp * pp * cp <= cfg.world:
                if cfg.world % (tp * pp * cp) == 0 and (cp == 1 or cfg.seq_len % (2 * cp) == 0):
                    out.append(Layout(tp=tp, pp=pp, cp=cp, dp=cfg.world // (tp * pp * cp)))
                cp *= 2
    return out


def choose_layout(shape: ModelShape, cfg: PlanConfig) -> Plan:
    """The fitting layout with the most data parallelism; then selective over full recompute
    (a third less compute), fewer pipeline stages (bubbles), and TP (NVLink) before CP.

    Raises:
        ValueError: no layout fits (naming the smallest training peak found).
    """
    scored = []
    candidates = candidate_layouts(shape, cfg)
    for layout in candidates:
        for recompute in RECOMPUTE:
            mem = estimate(shape, layout, cfg, recompute)
            key = (layout.model_parallel, recompute == "full", layout.pp, layout.cp, -layout.tp)
            scored.append((key, layout, recompute, mem))
    fitting = sorted((s for s in scored if s[3].fits), key=lambda s: s[0])
    if not fitting:
        best = min(scored, key=lambda s: max(s[3].training_peak, s[3].rollout_peak))
        raise ValueError(
            f"no layout of {cfg.nodes} node(s) x {cfg.gpus_per_node} GPUs x {cfg.gpu_mem_gb} GB fits "
            f"seq_len={cfg.seq_len}; the smallest needs {max(best[3].training_peak, best[3].rollout_peak) / 1e9:.1f} GB "
            f"per GPU ({best[1]}, recompute={best[2]}): add nodes or shorten the sequences")
    _, layout, recompute, mem = fitting[0]
    return Plan(layout=layout, recompute=recompute, memory=mem, considered=len(candidates),
                alternatives=[(s[1], s[2]) for s in fitting[1:6]])
