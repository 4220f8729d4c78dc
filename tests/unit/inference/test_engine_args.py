import pytest

from megatron_pacore.inference.factory import is_url, make_generator
from megatron_pacore.config_cli import parse_key_values as parse_engine_args
from megatron_pacore.inference.vllm_engine import check_model_dir


def test_engine_args_parse_json_values_and_strings():
    args = parse_engine_args([
        "tensor_parallel_size=2",
        "gpu-memory-utilization=0.85",
        "enforce_eager=true",
        'hf_overrides={"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}',
        "reasoning_parser=qwen3",
    ])
    assert args == {
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.85,
        "enforce_eager": True,
        "hf_overrides": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
        "reasoning_parser": "qwen3",
    }


def test_engine_arg_without_value_is_an_error():
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_engine_args(["max_model_len"])


def test_model_dir_checks(tmp_path):
    with pytest.raises(ValueError, match="model directory not found"):
        check_model_dir(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no config.json"):
        check_model_dir(str(tmp_path))


def test_url_detection_and_engine_args_rejected_for_servers():
    assert is_url("http://127.0.0.1:8000/v1") and is_url("https://h/v1") and not is_url("/ckpt")
    with pytest.raises(ValueError, match="configure an in-process engine"):
        make_generator("http://127.0.0.1:1/v1", {"max_model_len": 10})
