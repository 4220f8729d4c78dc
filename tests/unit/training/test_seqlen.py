"""Sequence-length rules of the layout (CP load balancing, SP split, FP8 GEMM alignment) and
the forward pass refusing lengths and masks the model would mis-handle."""
import pytest
import torch

from megatron_pacore.training.forward import MicroBatch, check_batches
from megatron_pacore.training.seqlen import check_length, length_multiple, padded_length


def test_no_parallelism_accepts_any_length():
    assert length_multiple() == 1
    assert padded_length(37) == 37
    check_length(37)


def test_context_parallel_pads_to_twice_cp():
    assert padded_length(37, cp=2) == 40
    assert padded_length(40, cp=4) == 40
    assert padded_length(41, cp=4) == 48
    with pytest.raises(ValueError, match=r"divisible by 2 \* parallel.cp = 4.*pad it to 40"):
        check_length(38, cp=2)


def test_sequence_parallel_needs_each_cp_shard_divisible_by_tp():
    # cp=2, tp=3: s % 4 (CP) and (s/2) % 3 (SP) -> s % 12.
    assert length_multiple(tp=3, sequence_parallel=True, cp=2) == 12
    assert padded_length(25, tp=3, sequence_parallel=True, cp=2) == 36
    check_length(36, tp=3, sequence_parallel=True, cp=2)
    with pytest.raises(ValueError, match=r"\(s / parallel.cp\) is divisible by parallel.tp = 3"):
        check_length(28, tp=3, sequence_parallel=True, cp=2)  # 28 % 4 == 0 but 14 % 3 != 0
    # Without SP (or with tp=1) the TP size puts no rule on the length.
    assert length_multiple(tp=3, sequence_parallel=False, cp=2) == 4
    assert length_multiple(tp=1, sequence_parallel=True) == 1


def test_fp8_needs_sixteen_tokens_per_rank_and_thirty_two_for_mxfp8():
    assert padded_length(17, fp8="hybrid") == 32
    assert padded_length(17, fp8="e4m3", fp8_recipe="mxfp8") == 32
    assert padded_length(33, fp8="e4m3", fp8_recipe="mxfp8") == 64
    assert length_multiple(fp8="hybrid", cp=2) == 32  # s/cp % 16
    assert length_multiple(fp8="hybrid", cp=2, tp=4, sequence_parallel=True) == 32
    assert length_multiple(fp8="hybrid", cp=3, tp=4, sequence_parallel=True) == 48
    with pytest.raises(ValueError, match="FP8 GEMMs"):
        check_length(24, fp8="hybrid")
    assert padded_length(17, fp8=None, fp8_recipe="mxfp8") == 17


def test_bad_sizes_name_the_field():
    with pytest.raises(ValueError, match="parallel.cp"):
        length_multiple(cp=0)
    with pytest.raises(ValueError, match="sequence length"):
        padded_length(0)


class _Model(torch.nn.Module):
    def __init__(self, **kw):
        from megatron.core.transformer.transformer_config import TransformerConfig

        super().__init__()
        self.config = TransformerConfig(num_layers=1, hidden_size=64, num_attention_heads=4,
                                        use_cpu_initialization=True, **kw)


def test_forward_checks_every_micro_batch_against_the_model_config():
    model = _Model(tensor_model_parallel_size=2, sequence_parallel=True, context_parallel_size=2)
    check_batches(model, [MicroBatch(torch.zeros(1, 8, dtype=torch.long))])
    with pytest.raises(ValueError, match=r"micro-batch 1: .*pad it to 12"):
        check_batches(model, [MicroBatch(torch.zeros(1, 8, dtype=torch.long)),
                              MicroBatch(torch.zeros(1, 10, dtype=torch.long))])
