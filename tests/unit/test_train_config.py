"""TrainConfig: the YAML tree, dotted overrides (also into the curriculum list), field-named errors."""
import pytest

from megatron_pacore.config import load_config
from megatron_pacore.train_config import TrainConfig

YAML = """
model: {path: /ckpt/policy, precision: fp32}
parallel: {tp: 2, device: cpu}
stages:
  - {name: stage1, data: s1.jsonl, iterations: 3}
  - {name: stage2, data: s2.jsonl, iterations: 5}
logging: {dir: /tmp/run}
"""


@pytest.fixture
def yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(YAML)
    return p


def test_yaml_builds_the_tree_with_paper_defaults(yaml_file):
    cfg = load_config(TrainConfig, str(yaml_file))
    assert cfg.stages[1].name == "stage2" and cfg.total_iterations == 8
    assert cfg.actor_optimizer.lr == 2e-6 and cfg.critic_optimizer.lr == 5e-6
    assert (cfg.ppo.gamma, cfg.ppo.gae_lambda) == (1.0, 1.0)
    assert (cfg.sampler.num_problems, cfg.sampler.min_messages, cfg.sampler.max_messages,
            cfg.sampler.samples_per_problem) == (16, 16, 24, 64)
    assert cfg.checkpoint.dir == "/tmp/run/checkpoints"
    assert cfg.stage_at(3)[1].name == "stage1" and cfg.stage_at(4)[1].name == "stage2"


def test_model_section_is_the_builders_model_options_plus_the_policy(yaml_file):
    from megatron_pacore.training.models import ModelOptions

    cfg = load_config(TrainConfig, str(yaml_file), ["model.fp8_recipe=tensorwise"])
    assert isinstance(cfg.model, ModelOptions)  # passed to build_actor / build_critic as it is
    assert (cfg.model.path, cfg.model.precision, cfg.model.fp8_recipe) == ("/ckpt/policy", "fp32", "tensorwise")


def test_parallel_section_is_trainings_parallel_config(yaml_file):
    from megatron_pacore.training.parallel import ParallelConfig

    cfg = load_config(TrainConfig, str(yaml_file), ["parallel.timeout_minutes=5"])
    assert isinstance(cfg.parallel, ParallelConfig)
    assert (cfg.parallel.tp, cfg.parallel.device, cfg.parallel.timeout_minutes) == (2, "cpu", 5)
    assert load_config(TrainConfig, str(yaml_file), ["parallel.device=auto"]).parallel.device == "auto"


def test_overrides_reach_into_the_stage_list_and_nested_parts(yaml_file):
    cfg = load_config(TrainConfig, str(yaml_file), ["stages.1.iterations=7", "ppo.clip_ratio=0.3", "resume=true"])
    assert cfg.stages[1].iterations == 7 and cfg.stages[0].iterations == 3
    assert cfg.ppo.clip_ratio == 0.3 and cfg.resume is True


@pytest.mark.parametrize("override,field", [
    ("sampler.min_messages=0", "sampler.min_messages"),
    ("ppo.gae_lambda=1.5", "ppo.gae_lambda"),
    ("actor_optimizer.lr_decay_style=step", "optimizer.lr_decay_style"),
    ("stages.0.iterations=0", "stages[stage1].iterations"),
    ("rollout.weight_sync.backend=ipc", "weight_sync.backend"),
    ("rollout.max_tokens=0", "rollout.max_tokens must be >= 1, got 0"),
    ("rollout.top_p=1.5", "rollout.top_p must be in"),
    ("sampler.nonexistent=1", "nonexistent"),
    ("model.precision=fp64", "model.precision"),
    ("model.fp8_margin=2", "model.fp8_margin"),
    ("parallel.tp=0", "parallel.tp"),
    ("parallel.device=tpu", "parallel.device"),
])
def test_bad_values_name_the_field(yaml_file, override, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_config(TrainConfig, str(yaml_file), [override])


def test_a_curriculum_is_required(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {path: /ckpt}\n")
    with pytest.raises(ValueError, match="stages"):
        load_config(TrainConfig, str(p))


def test_hf_overrides_merge_into_the_rope_dict_and_refuse_unknown_fields():
    from transformers import Qwen3Config

    from megatron_pacore.hf_config import apply_hf_overrides

    hf = Qwen3Config(rope_theta=1e6, max_position_embeddings=32768)
    base = dict(hf.rope_parameters)
    merged = apply_hf_overrides(hf, {"rope_parameters": {"rope_type": "yarn", "factor": 4.0,
                                                         "original_max_position_embeddings": 32768},
                                     "max_position_embeddings": 131072})
    assert hf.rope_parameters["rope_type"] == "yarn" and hf.rope_parameters["rope_theta"] == base["rope_theta"]
    assert merged["rope_parameters"] == hf.rope_parameters and hf.max_position_embeddings == 131072
    with pytest.raises(ValueError, match="no field 'rope_scailng'"):
        apply_hf_overrides(hf, {"rope_scailng": {}})


@pytest.mark.parametrize("name,stage,iterations", [("qwen3_8b_stage1", "stage1", 250), ("qwen3_8b_stage2", "stage2", 450)])
def test_paper_configs_carry_the_paper_settings(name, stage, iterations):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "configs" / f"{name}.yaml"
    cfg = load_config(TrainConfig, str(path))
    assert [(s.name, s.iterations) for s in cfg.stages] == [(stage, iterations)]
    s = cfg.sampler
    assert (s.num_problems, s.min_messages, s.max_messages, s.samples_per_problem, s.temperature) == (16, 16, 24, 64, 1.0)
    assert (cfg.ppo.gamma, cfg.ppo.gae_lambda, cfg.ppo.kl_coef, cfg.ppo.entropy_coef) == (1.0, 1.0, 0.0, 0.0)
    assert (cfg.actor_optimizer.lr, cfg.critic_optimizer.lr) == (2e-6, 5e-6)
    assert cfg.rollout.max_model_len == 131072 and cfg.model.hf_overrides["rope_parameters"]["rope_type"] == "yarn"
    assert cfg.parallel.tp * cfg.parallel.pp * cfg.parallel.cp == 8  # one 8-GPU node per model replica
    assert cfg.ppo_epochs == 1  # strict on-policy
