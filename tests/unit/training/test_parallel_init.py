"""The default process group: on CUDA the rank's GPU is selected before NCCL starts; device
"auto" without CUDA starts gloo.

Without a GPU the two torch calls are recorded instead of made (the only stand-ins in this
suite; tests/gpu runs the real NCCL path). tools/convert_hf.py starts its distributed
conversion through this function (tests/distributed/test_convert_cli.py runs it on gloo)."""
import torch
import torch.distributed as dist

from megatron_pacore.training import parallel


def test_cuda_selects_local_rank_device_before_starting_nccl(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend)))
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    parallel.init_process_group(parallel.ParallelConfig(device="cuda"))
    assert calls == [("set_device", 1), ("init", "nccl")]



def test_auto_device_starts_gloo_without_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend)))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    parallel.init_process_group(parallel.ParallelConfig(device="auto"))
    assert calls == [("init", "gloo")]
