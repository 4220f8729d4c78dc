"""Packed sequences through Megatron-Core's GPTModel (block-diagonal mask, restarting
positions) give the log-probs, loss and gradients of the sequences run one by one."""
import pytest

from dist_launch import run_workers


@pytest.fixture(scope="module")
def measured(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packing_gpt")
    return run_workers("worker_packing_gpt.py", ["--model", str(tiny_model)], tmp / "result.json", nproc=1)


def test_packed_logprobs_equal_per_sequence_logprobs(measured):
    assert measured["logprob_max_diff"] <= 1e-5
    # Control: without the block-diagonal mask the second sequence sees the first.
    assert measured["control_diff"] > 1e-2


def test_packed_loss_and_gradients_equal_unpacked(measured):
    assert measured["loss_packed"] == pytest.approx(measured["loss_single"], rel=1e-5, abs=1e-7)
    assert measured["grad_scale"] > 1e-4  # the comparison is not vacuous
    assert measured["grad_max_diff"] <= 1e-5 * max(1.0, measured["grad_scale"])
