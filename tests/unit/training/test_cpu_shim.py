"""The CPU device shim: CUDA device arguments and RNG calls land on the CPU, and it undoes."""
import pytest
import torch

from megatron_pacore.training import cpu_shim

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the shim refuses to run with CUDA")


@pytest.fixture
def shim():
    cpu_shim.activate()
    yield
    cpu_shim.deactivate()


def test_cuda_device_arguments_become_cpu(shim):
    assert torch.zeros(3, device="cuda").device.type == "cpu"
    assert torch.ones(2, device=torch.device("cuda", 0)).device.type == "cpu"
    t = torch.arange(4)
    assert t.cuda() is t
    assert t.to("cuda").device.type == "cpu"
    assert torch.empty(2, device=torch.cuda.current_device()).device.type == "cpu"


def test_megatron_rng_tracker_forks_a_seeded_stream_and_restores_the_default(shim):
    from megatron.core.tensor_parallel.random import CudaRNGStatesTracker

    tracker = CudaRNGStatesTracker()
    tracker.add("model-parallel-rng", 7)
    torch.manual_seed(0)
    with tracker.fork("model-parallel-rng"):
        a = torch.rand(4)
    after_fork = torch.rand(2)
    torch.manual_seed(0)
    expected_default = torch.rand(2)
    reference = torch.Generator().manual_seed(7)
    assert torch.equal(a, torch.rand(4, generator=reference))
    assert torch.equal(after_fork, expected_default)


def test_deactivate_restores_torch_cuda():
    original = torch.cuda.current_device
    cpu_shim.activate()
    assert torch.cuda.current_device() == "cpu"
    cpu_shim.deactivate()
    assert torch.cuda.current_device is original
    assert not cpu_shim.is_active()
