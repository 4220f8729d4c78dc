"""One optimizer step of a model over a list of micro-batches, through Megatron's schedule.

    metrics = train_step(trainable, batches, loss_fn)

`loss_fn(output, inputs)` is called on the last pipeline stage for each micro-batch with the
model output ([b, s', Vp/tp] vocab-parallel logits for the actor, [b, s', 1] values for the
critic; s' = s / cp on a context-parallel rank) and a `LossInputs` holding the micro-batch's
per-token tensors as this rank sees them, moved to *label positions* so that they line up
with the output: entry t of every tensor describes token t + 1, the token that the output at
position t predicts (or whose state's value it is). It returns
`(loss_sum, num_tokens, metrics)`: the sum of the token losses of the micro-batch, the number
of tokens summed, and detached scalars to average. Megatron's per-token loss mode
(`training.optimizer.make_trainable`) then divides the gradient by the global token count, so
the step minimises the token mean over all micro-batches and data-parallel ranks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from megatron_pacore.training.forward import MicroBatch, check_batches, cp_split, model_forward
from megatron_pacore.training.optimizer import Trainable


@dataclass
class LossInputs:
    """What a loss function sees of one micro-batch (this CP rank's part, label-aligned).

    labels: [b, s'] the next token of each position.
    tensors: name -> [b, s'] per-token tensors (response_mask, old_logprobs, advantages,
        returns, old_values, ...), each shifted to label positions.
    """

    labels: torch.Tensor
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]


def to_label_positions(x: torch.Tensor) -> torch.Tensor:
    """[b, s] token-aligned -> label-aligned: out[:, t] = x[:, t + 1] (the last gets 0).
    The inverse of `training.logprobs.to_token_positions`."""
    return torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)


LossFn = Callable[[torch.Tensor, LossInputs], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]


def _local_inputs(mb: MicroBatch, tensors: dict[str, torch.Tensor], cp: int, cp_rank: int):
    """This CP rank's micro-batch and its label-aligned per-token tensors."""
    labels = mb.next_tokens()
    shifted = {k: to_label_positions(v) for k, v in tensors.items()}
    if cp == 1:
        return mb, LossInputs(labels=labels, tensors=shifted)
    if mb.attention_mask is not None or mb.packed_seq_params is not None:
        raise ValueError("packed micro-batches are not supported with parallel.cp > 1: "
                         "give one (padded) sequence per micro-batch")
    local = MicroBatch(input_ids=cp_split(mb.input_ids, cp, cp_rank),
                       position_ids=cp_split(mb.positions(), cp, cp_rank))
    return local, LossInputs(labels=cp_split(labels, cp, cp_rank),
                             tensors={k: cp_split(v, cp, cp_rank) for k, v in shifted.items()})


def train_step(trainable: Trainable, batches: list[MicroBatch], loss_fn: LossFn,
               token_tensors: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Forward and backward over `batches`, then one optimizer step.

    Args:
        batches: micro-batches, each input_ids [b, s] (b = 1 for a packed micro-batch, with
            position_ids restarting per sequence and a block-diagonal attention_mask on CPU).
        token_tensors: per micro-batch, name -> [b, s] token-aligned tensors for loss_fn.
    Returns:
        The token-weighted mean of each metric of loss_fn over this rank's micro-batches
        (last pipeline stage; other stages return only the optimizer metrics), plus
        grad_norm, lr and step_applied from the optimizer.
    """
    from megatron.core.pipeline_parallel import get_forward_backward_func

    if len(batches) != len(token_tensors):
        raise ValueError(f"{len(batches)} micro-batches but {len(token_tensors)} token tensor sets")
    check_batches(trainable.module, batches)  # lengths the layout can split; no mask under TE
    groups = trainable.groups
    cp, cp_rank = groups.config.cp, groups.cp_rank
    local = [_local_inputs(mb, t, cp, cp_rank) for mb, t in zip(batches, token_tensors)]
    shapes = {tuple(mb.input_ids.shape) for mb, _ in local}
    model = trainable.module
    model.config.variable_seq_lengths = len(shapes) > 1
    b, s = local[0][0].input_ids.shape
    device = groups.device
    it = iter(local)

    def step(data_iterator, stage_model):
        mb, inputs = next(data_iterator)
        output = model_forward(stage_model, mb, device)
        inputs = LossInputs(labels=inputs.labels.to(device),
                            tensors={k: v.to(device) for k, v in inputs.tensors.items()})

        def loss_func(out):
            loss_sum, num_tokens, metrics = loss_fn(out, inputs)
            # Megatron sums the second value over micro-batches and DP ranks, as an int.
            return loss_sum, num_tokens.detach().to(torch.int), {
                k: torch.stack([v.detach().float() * num_tokens.detach().float(), num_tokens.detach().float()])
                for k, v in metrics.items()}

        return output, loss_func

    trainable.zero_grad()
    results = get_forward_backward_func()(
        forward_step_func=step, data_iterator=it, model=[model], num_microbatches=len(local),
        seq_length=s, micro_batch_size=b, forward_only=False)
    out = trainable.step()
    if groups.is_last_stage and results:
        sums: dict[str, torch.Tensor] = {}
        for r in results:
            for k, v in r.items():
                sums[k] = sums.get(k, 0) + v
        for k, v in sums.items():
            out[k] = float(v[0] / v[1].clamp(min=1))
    return out
