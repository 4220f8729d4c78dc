"""The critic: the actor's GPT backbone with a scalar value head in place of the output layer.

    critic = build_critic(hf_config, groups, ModelOptions(...))
    load_hf_weights(critic, hf_dir, tp, tp_rank)   # the actor's weights; the head keeps its init
    values = token_values(critic(input_ids, position_ids, None))   # [b, s], training.logprobs

The head is replicated over tensor-parallel ranks (same seeded initialisation everywhere) and
checkpoints with Megatron's dist_checkpointing like any other replicated parameter.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.module import MegatronModule

from megatron_pacore.training.models import ModelOptions, build_gpt
from megatron_pacore.training.parallel import ParallelGroups


class ValueHead(MegatronModule):
    """Scalar value per token, in place of the output layer: [s, b, h] -> ([s, b, 1], None).

    Under sequence parallelism the input is the local sequence chunk [s/tp, b, h]: the output
    is gathered along s, and the parameters are marked `sequence_parallel` so that Megatron's
    finalize_model_grads all-reduces their gradients over the TP group.
    """

    def __init__(self, hidden_size: int, config, tp_group, seed: int = 0):
        super().__init__(config)
        gen = torch.Generator().manual_seed(seed)  # same init on every TP rank
        dtype = config.params_dtype
        device = "cpu" if config.use_cpu_initialization else torch.cuda.current_device()
        weight = torch.randn(1, hidden_size, generator=gen) * config.init_method_std
        self.weight = torch.nn.Parameter(weight.to(device=device, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(1, device=device, dtype=dtype))
        self.sequence_parallel = config.sequence_parallel
        self.tp_group = tp_group
        for p in (self.weight, self.bias):
            setattr(p, "sequence_parallel", config.sequence_parallel)

    def forward(self, hidden: torch.Tensor, weight=None, runtime_gather_output=None):
        values = F.linear(hidden, self.weight, self.bias)
        if self.sequence_parallel:
            from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

            values = gather_from_sequence_parallel_region(
                values, tensor_parallel_output_grad=False, group=self.tp_group)
        return values, None


def build_critic(hf_config: Any, groups: ParallelGroups, opts: ModelOptions,
                 padded_vocab: Optional[int] = None, head_seed: int = 0):
    """This rank's stage of the critic. Forward: input_ids [b, s] -> values [b, s, 1] on the
    last stage (hidden states elsewhere). Weights uninitialised except the head: load them."""
    model = build_gpt(hf_config, groups, opts, padded_vocab, tie=False)
    if groups.is_last_stage:
        model.output_layer = ValueHead(hf_config.hidden_size, model.config, groups.tp_group, head_seed)
    model.is_critic = True
    return model
