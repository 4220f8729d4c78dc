"""The critic: the actor's GPT backbone and a scalar value head, built as one module.

    critic, info = build_critic(hf_config, groups, ModelOptions(...))
    load_hf_weights(critic, info, hf_dir, tp, tp_rank)   # the actor's weights; the head keeps its init
    values = token_values(critic(input_ids, position_ids, None))   # [b, s], training.logprobs

`CriticModel` owns a `GPTModel` built without post-processing (no final norm, no vocabulary
projection: the critic never allocates the Vp x h output layer), and on the last pipeline
stage the final norm (the same module the decoder block would build) and the `ValueHead`.
Its checkpoint keys are the actor's for the backbone and the final norm
(`decoder.final_layernorm.weight`), plus `value_head.weight` / `value_head.bias`; the head is
replicated over tensor-parallel ranks (same seeded initialisation everywhere).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.module import MegatronModule

from megatron_pacore.hf_config import family_for
from megatron_pacore.training.models import ModelInfo, ModelOptions, build_gpt, layer_spec
from megatron_pacore.training.parallel import ParallelGroups

FINAL_NORM = "decoder.final_layernorm."


class ValueHead(MegatronModule):
    """Scalar value per token: [s, b, h] -> ([s, b, 1], None) (the output-layer signature).

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


class CriticModel(MegatronModule):
    """One pipeline stage of the critic.

    Forward: (input_ids [b, s], position_ids [b, s], attention_mask, **GPTModel kwargs) ->
    values [b, s, 1] on the last stage, hidden states [s, b, h] on the others.

    `model_type`, `decoder`, `set_input_tensor`, `pre_process`, `post_process` and
    `share_embeddings_and_output_weights` are the model attributes Megatron's pipeline
    schedules and finalize_model_grads look up by name (`get_attr_wrapped_model`); they
    describe this stage as a whole (the critic never ties its embeddings).
    """

    share_embeddings_and_output_weights = False

    def __init__(self, backbone, final_layernorm: Optional[torch.nn.Module], value_head: Optional[ValueHead]):
        super().__init__(backbone.config)
        if (final_layernorm is None) != (value_head is None):
            raise ValueError("CriticModel: the final norm and the value head go together (last stage)")
        self.backbone = backbone
        self.final_layernorm = final_layernorm
        self.value_head = value_head
        self.model_type = backbone.model_type
        self.pre_process = backbone.pre_process
        self.post_process = value_head is not None

    @property
    def decoder(self):
        """The backbone's transformer block (this stage's layers)."""
        return self.backbone.decoder

    def set_input_tensor(self, input_tensor) -> None:
        self.backbone.set_input_tensor(input_tensor)

    def forward(self, input_ids, position_ids, attention_mask, **kwargs):
        hidden = self.backbone(input_ids, position_ids, attention_mask, **kwargs)
        if self.value_head is None:
            return hidden
        values, _ = self.value_head(self.final_layernorm(hidden))
        return values.transpose(0, 1).contiguous()

    def gpt_named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """The parameters that have an actor counterpart, under the actor GPTModel's names
        (the value head excluded): what the HF <-> Megatron tables map."""
        yield from self.backbone.named_parameters()
        if self.final_layernorm is not None:
            for name, p in self.final_layernorm.named_parameters():
                yield FINAL_NORM + name, p

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: Optional[dict] = None):
        """The actor's checkpoint keys for the backbone and the final norm, plus `value_head.*`;
        the dict keys are this module's state_dict keys (`backbone.*`, `final_layernorm.*`)."""
        from megatron.core.transformer.utils import sharded_state_dict_default

        out = {f"{prefix}backbone.{k[len(prefix):]}": v
               for k, v in self.backbone.sharded_state_dict(prefix, sharded_offsets, metadata).items()}
        if self.value_head is not None:
            norm = sharded_state_dict_default(self.final_layernorm, prefix + FINAL_NORM, sharded_offsets, metadata,
                                              tp_group=self.backbone.decoder.tp_group)  # as the block passes it
            out.update({f"{prefix}final_layernorm.{k[len(prefix + FINAL_NORM):]}": v for k, v in norm.items()})
            out.update(sharded_state_dict_default(self.value_head, f"{prefix}value_head.", sharded_offsets, metadata))
        return out


def _final_norm(config, spec):
    """The final norm exactly as Megatron's TransformerBlock builds it for this layer spec."""
    from megatron.core.transformer.spec_utils import build_module
    from megatron.core.transformer.transformer_block import _get_block_submodules

    norm = _get_block_submodules(config, spec).layer_norm
    return build_module(norm, config=config, hidden_size=config.hidden_size, eps=config.layernorm_epsilon)


def build_critic(hf_config: Any, groups: ParallelGroups, opts: ModelOptions,
                 padded_vocab: Optional[int] = None, head_seed: int = 0):
    """This rank's stage of the critic and its `ModelInfo`: `critic, info = build_critic(...)`.
    Weights uninitialised except the head's: load them."""
    backbone, padded = build_gpt(hf_config, groups, opts, padded_vocab, tie=False, post_process=False)
    norm = head = None
    if groups.is_last_stage:
        norm = _final_norm(backbone.config, layer_spec(family_for(hf_config), opts.use_te(groups)))
        head = ValueHead(hf_config.hidden_size, backbone.config, groups.tp_group, head_seed)
    info = ModelInfo(hf_config=hf_config, family=family_for(hf_config), padded_vocab_size=padded,
                     role="critic", tied=False)
    return CriticModel(backbone, norm, head), info
