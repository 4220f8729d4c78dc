"""Logit parity of a Megatron checkpoint with the Hugging Face model it came from.

`verify_checkpoint` builds the actor at the current TP/PP layout, loads the distributed
checkpoint with dist_checkpointing, runs random tokens through Megatron's pipeline schedule
in fp32 and compares the full-vocabulary logits with `transformers` on the same tokens.
Every rank returns the same max |diff| (all-reduced).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from megatron_pacore.training.parallel import ParallelGroups


def hf_logits(hf_dir: str | Path, input_ids: torch.Tensor) -> torch.Tensor:
    """`transformers` fp32 logits [b, s, V] of input_ids [b, s]."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids).logits


def random_tokens(vocab_size: int, batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    """The same [batch, seq] int64 tokens on every rank."""
    return torch.randint(0, vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


def verify_checkpoint(ckpt: str | Path, hf_dir: str | Path, groups: ParallelGroups,
                      batch: int = 2, seq: int = 64, seed: int = 0) -> float:
    """Max |Megatron logits - transformers logits| over random tokens (fp32, eval).

    Raises:
        RuntimeError: no rank produced logits (a pipeline schedule that returned nothing).
    """
    from megatron_pacore.checkpoint.dist import hf_config_of, load_model, read_info
    from megatron_pacore.training.forward import MicroBatch, forward_only, gather_vocab
    from megatron_pacore.training.models import ModelOptions, build_actor

    ckpt_info = read_info(ckpt)
    hf_config = hf_config_of(ckpt)
    ckpt_info.check_layout(groups.config.tp)
    model, info = build_actor(hf_config, groups, ModelOptions(precision="fp32"),
                              padded_vocab=ckpt_info.padded_vocab_size)
    load_model(model, info, ckpt)
    model.eval()
    ids = random_tokens(hf_config.vocab_size, batch, seq, seed)
    outs = forward_only(model, groups, [MicroBatch(ids)],
                        lambda logits, mb: gather_vocab(logits, groups, hf_config.vocab_size))
    # Only the last pipeline stage has logits; the others contribute nothing (not a 0 diff),
    # and the ranks that compared are counted, so a run in which no stage produced logits
    # cannot pass as "max diff 0".
    diff = torch.full((), -1.0, dtype=torch.float64, device=groups.device)
    compared = torch.zeros((), dtype=torch.int64, device=groups.device)
    if outs:
        ref = hf_logits(hf_dir, ids)
        diff.fill_(outs[0].float().cpu().sub(ref).abs().max().item())
        compared.fill_(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    dist.all_reduce(compared, op=dist.ReduceOp.SUM)
    if compared.item() == 0:
        raise RuntimeError("verify_checkpoint: no pipeline stage produced logits")
    return float(diff.item())
