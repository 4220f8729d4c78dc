import pytest

from megatron_pacore.config import InferConfig, load_config

BASE = dict(model="m", input="i.jsonl", output="o.jsonl")


def test_level_or_widths_exactly_one():
    with pytest.raises(ValueError, match="exactly one of level"):
        InferConfig(**BASE)
    with pytest.raises(ValueError, match="exactly one of level"):
        InferConfig(**BASE, level="low", widths="4")
    assert InferConfig(**BASE, widths="8,2").schedule().widths == (8, 2, 1)


@pytest.mark.parametrize("field,value,match", [
    ("concurrency", 0, "concurrency"), ("max_tokens", 0, "max_tokens"),
    ("reference_order", "x", "reference_order"), ("level", "huge", "level"), ("widths", "4,0", "positive"),
])
def test_bad_fields_are_named(field, value, match):
    kw = dict(BASE, level="low")
    if field in ("level", "widths"):
        kw.pop("level")
    kw[field] = value
    with pytest.raises(ValueError, match=match):
        InferConfig(**kw)


def test_yaml_and_dotted_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model: /ckpt\ninput: a.jsonl\noutput: b.jsonl\nlevel: high\nconcurrency: 8\n")
    cfg = load_config(InferConfig, str(y), ["concurrency=16", "vllm_args.max_model_len=4096"])
    assert cfg.concurrency == 16 and cfg.level == "high" and cfg.vllm_args == {"max_model_len": 4096}


def test_unknown_key_and_wrong_type_are_named(tmp_path):
    with pytest.raises(ValueError, match="concurency"):
        load_config(InferConfig, None, ["model=m", "input=i", "output=o", "level=low", "concurency=3"])
    with pytest.raises(ValueError, match="concurrency"):
        load_config(InferConfig, None, ["model=m", "input=i", "output=o", "level=low", "concurrency=many"])
