"""Rollout seam: config checks name the field; the HF -> vLLM module map of check_weights;
the GPU-only transfer backends refuse cleanly on CPU."""
import pytest
import torch

from megatron_pacore.inference.rollout_types import (
    RolloutEngine, RolloutEngineConfig, WeightSyncConfig)


@pytest.mark.parametrize("kwargs, field", [
    (dict(backend="rpc"), "weight_sync.backend"),
    (dict(bucket_bytes=0), "weight_sync.bucket_bytes"),
    (dict(nccl_master_port=70000), "weight_sync.nccl_master_port"),
    (dict(backend="nccl"), "weight_sync.nccl_world_size"),
])
def test_weight_sync_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        WeightSyncConfig(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(model=""), "rollout.model"),
    (dict(model="m", tensor_parallel_size=0), "rollout.tensor_parallel_size"),
    (dict(model="m", dtype="fp8"), "rollout.dtype"),
    (dict(model="m", max_model_len=1), "rollout.max_model_len"),
    (dict(model="m", gpu_memory_utilization=1.5), "rollout.gpu_memory_utilization"),
])
def test_rollout_engine_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RolloutEngineConfig(**kwargs)


def test_defaults_are_the_colocated_cpu_path():
    sync = WeightSyncConfig()
    assert sync.backend == "reload" and not sync.check_weights and not sync.prefetch
    assert RolloutEngineConfig(model="m").enable_sleep_mode is None  # auto: on with CUDA only


@pytest.mark.parametrize("hf, target", [
    ("model.layers.3.self_attn.q_proj.weight", ("model.layers.3.self_attn.qkv_proj", "weight", "q")),
    ("model.layers.3.self_attn.v_proj.bias", ("model.layers.3.self_attn.qkv_proj", "bias", "v")),
    ("model.layers.0.mlp.up_proj.weight", ("model.layers.0.mlp.gate_up_proj", "weight", "up")),
    ("model.layers.0.mlp.down_proj.weight", ("model.layers.0.mlp.down_proj", "weight", None)),
    ("model.layers.1.self_attn.q_norm.weight", ("model.layers.1.self_attn.q_norm", "weight", None)),
    ("model.embed_tokens.weight", ("model.embed_tokens", "weight", None)),
    ("lm_head.weight", ("lm_head", "weight", None)),
])
def test_check_weights_maps_hf_names_to_the_vllm_modules_that_load_them(hf, target):
    from megatron_pacore.inference.weight_check import engine_target

    assert engine_target(hf) == target


def test_colocated_engine_is_a_rollout_engine_and_refuses_transfer_backends(tmp_path):
    from megatron_pacore.inference.rollout import ColocatedVLLM

    assert isinstance(object.__new__(ColocatedVLLM), RolloutEngine)
    with pytest.raises(ValueError, match="weight_sync.backend='ipc'"):
        ColocatedVLLM(RolloutEngineConfig(model=str(tmp_path)), WeightSyncConfig(backend="ipc"))


def test_export_source_declares_what_it_yields_and_sender_refuses_reload():
    from megatron_pacore.inference.transfer import ExportSource, TransferSender

    source = ExportSource(lambda: iter([("w", torch.ones(2, 3))]))
    assert [(m.name, m.shape, m.dtype) for m in source.metadata()] == [("w", (2, 3), torch.float32)]
    assert [n for n, _ in source] == ["w"]
    with pytest.raises(ValueError, match="TransferSender is for"):
        TransferSender(WeightSyncConfig(), client=None, source=source, rank=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_transfer_backends_refuse_without_cuda():
    from megatron_pacore.inference.transfer import ExportSource, TransferSender

    source = ExportSource(lambda: iter([("w", torch.ones(2, 3))]))
    with pytest.raises(ValueError, match="needs CUDA"):
        TransferSender(WeightSyncConfig(backend="ipc"), client=None, source=source, rank=0)


def test_prefetched_buckets_arrive_in_order_and_errors_reach_the_consumer():
    from megatron_pacore.inference.rollout import _prefetched

    buckets = [[(f"t{i}", torch.full((2,), float(i)))] for i in range(5)]
    assert [b[0][0] for b in _prefetched(iter(buckets))] == [f"t{i}" for i in range(5)]

    def failing():
        yield buckets[0]
        raise RuntimeError("export failed at bucket 1")

    got = []
    with pytest.raises(RuntimeError, match="export failed at bucket 1"):
        for b in _prefetched(failing()):
            got.append(b)
    assert len(got) == 1


def test_closing_prefetched_buckets_stops_the_export_thread():
    import threading

    from megatron_pacore.inference.rollout import _prefetched

    produced = []

    def export():
        for i in range(100):
            produced.append(i)
            yield [(f"t{i}", torch.zeros(1))]

    gen = _prefetched(export())
    next(gen)
    gen.close()  # what a failed load does
    assert not any(t.name == "weight-sync-export" for t in threading.enumerate())
    assert len(produced) <= 3  # the helper stopped after at most the bucket it was on
