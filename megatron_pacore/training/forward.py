"""Forward passes through Megatron's pipeline schedule, for any TP/PP/CP layout.

`forward_only` runs a list of micro-batches through `get_forward_backward_func()` without a
backward pass and hands each last-stage output, with its micro-batch, to a `collect`
callback (log-probs, values, gathered logits ...). Other pipeline stages return [].

Context parallelism (CP > 1, Transformer Engine attention): every micro-batch is cut along
the sequence into 2*cp chunks and CP rank r keeps chunks r and 2*cp-1-r (`cp_split`, the
load-balanced layout Megatron's rotary embedding and TE's CP attention assume). `collect` then
sees this rank's part; `cp_gather` reassembles per-position results to the full sequence.
`gather_vocab` assembles full logits from the vocab-parallel shards (tests, verification).

Every micro-batch's length must meet the layout's rules (CP, SP, FP8: `training.seqlen`);
`forward_only` checks them before anything runs, naming the rule and the length to pad to.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from megatron_pacore.training import seqlen
from megatron_pacore.training.models import unwrap
from megatron_pacore.training.parallel import ParallelGroups


@dataclass
class MicroBatch:
    """One micro-batch of token sequences.

    input_ids:      [b, s] int64 tokens.
    position_ids:   [b, s] int64 positions; None = 0..s-1 for every row.
    attention_mask: [b, 1, s, s] bool, True = masked out; None = causal (the usual case).
    labels:         [b, s] int64 next tokens (labels[:, t] = input_ids[:, t+1]); None = derived.
    extra:          anything the collect callback needs (response masks, ...).
    packed_seq_params: Megatron PackedSeqParams (THD packed attention on the Transformer
                    Engine spec: b = 1, sequences delimited by cu_seqlens); None = unpacked
                    or, on CPU, packed through a block-diagonal attention_mask.
    """

    input_ids: torch.Tensor
    position_ids: Optional[torch.Tensor] = None
    attention_mask: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None
    extra: Any = None
    packed_seq_params: Any = None

    def positions(self) -> torch.Tensor:
        if self.position_ids is not None:
            return self.position_ids
        b, s = self.input_ids.shape
        return torch.arange(s, device=self.input_ids.device).unsqueeze(0).expand(b, s)

    def next_tokens(self) -> torch.Tensor:
        """labels, or input_ids shifted left by one (the last position gets token 0)."""
        if self.labels is not None:
            return self.labels
        return torch.cat([self.input_ids[:, 1:], torch.zeros_like(self.input_ids[:, :1])], dim=1)


def cp_split(x: torch.Tensor, cp: int, rank: int, dim: int = 1) -> torch.Tensor:
    """[.., s, ..] -> [.., s/cp, ..]: chunks `rank` and `2*cp-1-rank` of 2*cp along `dim`.

    Raises:
        ValueError: s is not divisible by 2 * cp.
    """
    if cp == 1:
        return x
    s = x.shape[dim]
    if s % (2 * cp):
        raise ValueError(f"sequence length {s} must be divisible by 2 * parallel.cp = {2 * cp}")
    chunks = x.chunk(2 * cp, dim=dim)
    return torch.cat([chunks[rank], chunks[2 * cp - 1 - rank]], dim=dim)


def cp_merge(parts: list[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """Inverse of `cp_split` given every CP rank's part, in rank order."""
    cp = len(parts)
    if cp == 1:
        return parts[0]
    chunks: list[Optional[torch.Tensor]] = [None] * (2 * cp)
    for rank, part in enumerate(parts):
        first, second = part.chunk(2, dim=dim)
        chunks[rank], chunks[2 * cp - 1 - rank] = first, second
    return torch.cat(chunks, dim=dim)


def cp_gather(x: torch.Tensor, groups: ParallelGroups, dim: int = 1) -> torch.Tensor:
    """This CP rank's part of a per-position result -> the full sequence (no gradient)."""
    cp = groups.config.cp
    if cp == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(cp)]
    dist.all_gather(parts, x.contiguous(), group=groups.cp_group)
    return cp_merge(parts, dim=dim)


def uses_te_attention(model) -> bool:
    """True when the model's core attention is Transformer Engine's (it runs its own causal
    mask and ignores an attention_mask argument)."""
    inner = model.module if hasattr(model, "module") else model
    decoder = getattr(inner, "decoder", None)
    layers = getattr(decoder, "layers", None) or []
    if not len(layers):
        return False
    core = getattr(getattr(layers[0], "self_attention", None), "core_attention", None)
    return type(core).__name__.startswith("TE")


def check_batches(model, batches: list[MicroBatch]) -> None:
    """Refuse micro-batches the model would mis-handle: lengths the layout cannot split
    (`seqlen.check_length`) and explicit attention masks under TE's causal attention.

    Raises:
        ValueError: naming the micro-batch, the rule and what to change.
    """
    inner = model.module if hasattr(model, "module") else model
    rules = seqlen.config_kwargs(inner.config)
    te = uses_te_attention(model)
    for i, mb in enumerate(batches):
        try:
            seqlen.check_length(mb.input_ids.shape[1], **rules)
        except ValueError as e:
            raise ValueError(f"micro-batch {i}: {e}") from None
        if mb.attention_mask is not None and te:
            raise ValueError(
                f"micro-batch {i}: MicroBatch.attention_mask is set, but Transformer Engine's "
                "causal attention ignores explicit masks; pass attention_mask=None (causal) or "
                "build the model with model.transformer_engine=false")


def _local(mb: MicroBatch, groups: ParallelGroups) -> MicroBatch:
    """The micro-batch as this CP rank sees it (labels fixed before the sequence is cut)."""
    cp = groups.config.cp
    if cp == 1:
        return mb
    if mb.attention_mask is not None:
        raise ValueError("explicit attention masks are not supported with parallel.cp > 1")
    if mb.packed_seq_params is not None:
        raise ValueError("packed (THD) micro-batches are not supported with parallel.cp > 1: "
                         "give one (padded) sequence per micro-batch")
    r = groups.cp_rank
    return replace(mb, input_ids=cp_split(mb.input_ids, cp, r), position_ids=cp_split(mb.positions(), cp, r),
                   labels=cp_split(mb.next_tokens(), cp, r))


def model_forward(stage_model, mb: MicroBatch, device) -> torch.Tensor:
    """One stage's forward on a micro-batch (packed THD parameters passed when present)."""
    mask = None if mb.attention_mask is None else mb.attention_mask.to(device)
    kwargs = {} if mb.packed_seq_params is None else {"packed_seq_params": mb.packed_seq_params}
    return stage_model(mb.input_ids.to(device), mb.positions().to(device), mask, **kwargs)


def forward_only(model, groups: ParallelGroups, batches: list[MicroBatch],
                 collect: Callable[[torch.Tensor, MicroBatch], Any]) -> list[Any]:
    """Run `model` (one pipeline stage) over `batches` with Megatron's schedule, no grad.

    collect(output, batch): output is the last stage's model output for one micro-batch,
    [b, s/cp, Vp/tp] vocab-parallel logits for the actor or [b, s/cp, 1] values for the
    critic; batch is the micro-batch as this CP rank holds it.
    Returns the collected results in micro-batch order on the last stage, [] elsewhere.
    """
    from megatron.core.pipeline_parallel import get_forward_backward_func

    if not batches:
        return []
    check_batches(model, batches)
    shapes = {tuple(mb.input_ids.shape) for mb in batches}
    b, s = batches[0].input_ids.shape
    unwrap(model).config.variable_seq_lengths = len(shapes) > 1
    it = iter([_local(mb, groups) for mb in batches])

    def step(data_iterator, stage_model):
        mb = next(data_iterator)
        device = groups.device
        output = model_forward(stage_model, mb, device)

        def loss_func(out, non_loss_data=False):
            return collect(out, mb)

        return output, loss_func

    fb = get_forward_backward_func()
    with torch.no_grad():
        results = fb(
            forward_step_func=step,
            data_iterator=it,
            model=[model],
            num_microbatches=len(batches),
            seq_length=s,
            micro_batch_size=b,
            forward_only=True,
            collect_non_loss_data=True,
        )
    return list(results) if groups.is_last_stage else []


def gather_vocab(logits: torch.Tensor, groups: ParallelGroups, vocab_size: int) -> torch.Tensor:
    """Vocab-parallel logits [b, s, Vp/tp] -> full logits [b, s, vocab_size] (padding trimmed)."""
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    if groups.config.tp > 1:
        logits = gather_from_tensor_model_parallel_region(logits, group=groups.tp_group)
    return logits[..., :vocab_size]
