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
    ("sampler.nonexistent=1", "nonexistent"),
])
def test_bad_values_name_the_field(yaml_file, override, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_config(TrainConfig, str(yaml_file), [override])


def test_a_curriculum_is_required(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {path: /ckpt}\n")
    with pytest.raises(ValueError, match="stages"):
        load_config(TrainConfig, str(p))
