"""The config tree: checks naming the field, YAML + dotted overrides, and the flags derived
from the dataclasses (names, --help from the field docstrings, precedence)."""
import argparse
from pathlib import Path

import pytest

from megatron_pacore.config import GenerationOptions, GradingOptions, InferConfig, ServerOptions, load_config
from megatron_pacore.config_cli import add_config_arguments, config_from_args, field_docs
from megatron_pacore.data.curriculum_filter import Stage1FilterConfig
from megatron_pacore.data.pool_job import PoolJobConfig
from megatron_pacore.data.synthesis_filter import Stage2FilterConfig
from megatron_pacore.eval.config import EvalConfig
from megatron_pacore.types import SamplingSettings

ROOT = Path(__file__).resolve().parents[2]
BASE = dict(input="i.jsonl", output="o.jsonl", generation=GenerationOptions(model="m"))


def test_level_or_widths_exactly_one():
    with pytest.raises(ValueError, match="exactly one of level"):
        InferConfig(**BASE)
    with pytest.raises(ValueError, match="exactly one of level"):
        InferConfig(**BASE, level="low", widths="4")
    assert InferConfig(**BASE, widths="8,2").schedule().widths == (8, 2, 1)


@pytest.mark.parametrize("field,value,match", [
    ("level", "huge", "level"), ("widths", "4,0", "positive"), ("limit", 0, "limit must be >= 1, got 0"),
    ("input", "", "input is required"),
])
def test_bad_fields_are_named(field, value, match):
    kw = dict(BASE, level="low")
    if field in ("level", "widths"):
        kw.pop("level")
    kw[field] = value
    with pytest.raises(ValueError, match=match):
        InferConfig(**kw)


@pytest.mark.parametrize("kw,match", [
    (dict(concurrency=0), "concurrency must be >= 1, got 0"),
    (dict(max_retries=-1), "max_retries must be >= 0, got -1"),
    (dict(reference_order="sorted"), r"reference_order must be one of \['released', 'random'\], got 'sorted'"),
    (dict(max_message_tokens=0), "max_message_tokens must be >= 1, got 0"),
    (dict(model=""), "model is required"),
])
def test_generation_limits_are_checked_once_in_generation_options(kw, match):
    with pytest.raises(ValueError, match=match):
        GenerationOptions(**{"model": "m", **kw})


@pytest.mark.parametrize("kw,match", [
    (dict(max_tokens=0), "max_tokens must be >= 1, got 0"),
    (dict(temperature=-0.5), "temperature must be >= 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
])
def test_sampling_limits_are_checked_in_sampling_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplingSettings(**kw)


def test_yaml_and_dotted_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("input: a.jsonl\noutput: b.jsonl\nlevel: high\n"
                 "generation:\n  model: /ckpt\n  concurrency: 8\n  sampling:\n    temperature: 0.6\n")
    cfg = load_config(InferConfig, str(y), ["generation.concurrency=16", "generation.vllm_args.max_model_len=4096"])
    assert cfg.generation.concurrency == 16 and cfg.level == "high" and cfg.generation.vllm_args == {"max_model_len": 4096}
    assert cfg.generation.sampling == SamplingSettings(temperature=0.6)
    assert cfg.generation.model == "/ckpt" and cfg.generation.server == ServerOptions()


def test_unknown_key_and_wrong_type_are_named(tmp_path):
    base = ["generation.model=m", "input=i", "output=o", "level=low"]
    with pytest.raises(ValueError, match="concurency"):
        load_config(InferConfig, None, base + ["generation.concurency=3"])
    with pytest.raises(ValueError, match="concurrency"):
        load_config(InferConfig, None, base + ["generation.concurrency=many"])
    with pytest.raises(ValueError, match="temprature"):
        load_config(InferConfig, None, base + ["generation.sampling.temprature=0.5"])
    with pytest.raises(ValueError, match="must be dotted KEY=VALUE"):
        load_config(InferConfig, None, base + ["generation.concurrency"])
    with pytest.raises(ValueError, match="model is required"):
        load_config(InferConfig, None, ["input=i", "output=o", "level=low"])


def parser_for(cls):
    p = argparse.ArgumentParser(prog="t")
    add_config_arguments(p, cls)
    return p


def test_flags_are_derived_from_every_leaf_field_with_their_docstrings_as_help():
    p = parser_for(InferConfig)
    flags = {a.option_strings[0]: a for a in p._actions if a.option_strings and a.dest != "help"}
    assert set(flags) == {
        "--input", "--output", "--level", "--widths", "--resume", "--limit", "--model", "--max-tokens",
        "--temperature", "--top-p", "--seed", "--concurrency", "--max-retries", "--reference-order",
        "--max-message-tokens", "--vllm-arg", "--served-model-name", "--stream", "--config", "--allow-failed",
    }
    assert flags["--top-p"].help.startswith(field_docs(SamplingSettings)["top_p"])
    assert flags["--concurrency"].help == field_docs(GenerationOptions)["concurrency"] + " (default: 64)"
    assert flags["--level"].choices == ["high", "low", "medium"]
    assert flags["--reference-order"].choices == ["released", "random"]
    assert field_docs(GenerationOptions)["model"] == "checkpoint directory (in-process vLLM) or http(s):// server URL"
    eval_flags = {a.option_strings[0] for a in parser_for(EvalConfig)._actions if a.option_strings}
    assert {"--report", "--benchmark", "--levels", "--widths", "--runs", "--methods", "--pool",
            "--grade-workers", "--grade-timeout", "--model", "--max-tokens"} <= eval_flags
    assert "--ignore-eos" not in eval_flags  # metadata cli=False: benchmarks only


def test_every_config_field_has_a_docstring():
    for cls in (InferConfig, EvalConfig, GenerationOptions, ServerOptions, SamplingSettings, GradingOptions,
                PoolJobConfig, Stage1FilterConfig, Stage2FilterConfig):
        docs = field_docs(cls)
        missing = [f for f in cls.__dataclass_fields__ if not docs.get(f)]
        assert not missing, f"{cls.__name__}: fields without a docstring: {missing}"


def test_flags_yaml_and_overrides_compose_in_order(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("input: a.jsonl\noutput: b.jsonl\nlevel: low\n"
                 "generation:\n  model: /ckpt\n  concurrency: 8\n  max_retries: 5\n"
                 "  sampling: {temperature: 0.6, seed: 1}\n  vllm_args: {max_model_len: 4096}\n")
    args = parser_for(InferConfig).parse_args([
        "--config", str(y), "--concurrency", "16", "--seed", "2", "--vllm-arg", "enforce_eager=true",
        "--stream", "generation.sampling.seed=3"])
    cfg = config_from_args(InferConfig, args)
    g = cfg.generation
    assert (cfg.input, cfg.level, g.model) == ("a.jsonl", "low", "/ckpt")  # YAML
    assert (g.concurrency, g.max_retries) == (16, 5)  # the flag over YAML; YAML kept where no flag
    assert g.sampling == SamplingSettings(temperature=0.6, seed=3)  # the override over the flag
    assert g.vllm_args == {"max_model_len": 4096, "enforce_eager": True}
    assert g.server.stream is True


def test_flags_alone_build_the_config_with_the_defaults():
    args = parser_for(EvalConfig).parse_args([
        "--model", "m", "--report", "r", "--levels", "low,medium", "--methods", "pacore,single",
        "--grade-timeout", "3", "--max-tokens", "64", "--pool", "16"])
    cfg = config_from_args(EvalConfig, args)
    assert cfg.levels == ["low", "medium"] and cfg.methods == ["pacore", "single"]
    assert cfg.grading == GradingOptions(timeout_s=3.0) and cfg.pool == 16 and cfg.runs == 1
    assert cfg.generation == GenerationOptions(model="m", sampling=SamplingSettings(max_tokens=64))
    args = parser_for(EvalConfig).parse_args(["--model", "m", "--report", "r", "--widths", "4", "32,4"])
    assert config_from_args(EvalConfig, args).widths == ["4", "32,4"]


@pytest.mark.parametrize("name,cls", [("infer.yaml", InferConfig), ("eval.yaml", EvalConfig)])
def test_example_configs_load(name, cls):
    cfg = load_config(cls, str(ROOT / "examples" / "configs" / name))
    assert cfg.generation.model


def test_one_config_scripts_parse_their_whole_command_line():
    from megatron_pacore.config_cli import parse

    cfg = parse(InferConfig, ["--model", "m", "--input", "i", "--output", "o", "--widths", "8", "limit=3"])
    assert (cfg.generation.model, cfg.widths, cfg.limit) == ("m", "8", 3)


def test_pacore_reports_a_bad_yaml_key_with_exit_code_2(tmp_path, capsys):
    from megatron_pacore.cli import main

    y = tmp_path / "c.yaml"
    y.write_text("input: a.jsonl\noutput: b.jsonl\nlevel: low\ngeneration:\n  model: m\n  concurency: 8\n")
    assert main(["infer", "--config", str(y)]) == 2
    assert "concurency" in capsys.readouterr().err
    assert main(["infer", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_grading_options_check_their_limits_once_for_every_job():
    with pytest.raises(ValueError, match="grading.timeout_s must be > 0, got 0"):
        GradingOptions(timeout_s=0)
    with pytest.raises(ValueError, match="grading.workers must be >= 1, got 0"):
        GradingOptions(workers=0)
    for cls, base in ((EvalConfig, dict(report="r", generation={"model": "m"})),
                      (PoolJobConfig, dict(problems="p", out="o", generation={"model": "m"})),
                      (Stage1FilterConfig, dict(input="i", out="o", domain="math")),
                      (Stage2FilterConfig, dict(input="i", out="o", generation={"model": "m"}))):
        with pytest.raises(ValueError, match="grading.timeout_s must be > 0"):
            load_config(cls, overrides=["grading.timeout_s=0"], values=base)


def test_generation_refuses_options_a_job_would_ignore():
    GenerationOptions(model="m").refuse(("reference_order", "max_message_tokens", "vllm_args"), "this job")  # defaults
    with pytest.raises(ValueError, match=r"generation.vllm_args=\{'seed': 0\}: this job does not use it"):
        GenerationOptions(model="m", vllm_args={"seed": 0}).refuse(("vllm_args",), "this job")
    with pytest.raises(ValueError, match=r"generation.max_message_tokens=5: this job does not use it"):
        GenerationOptions(model="m", max_message_tokens=5).refuse(("max_message_tokens",), "this job")
    assert GenerationOptions(model="m", sampling=SamplingSettings(seed=4), reference_order="random").settings() == {
        "model": "m", "max_tokens": None, "temperature": 1.0, "top_p": 1.0, "seed": 4,
        "reference_order": "random", "max_message_tokens": None}


def test_flag_options_exclude_aliases_negation_lists_and_parse_errors(capsys):
    from dataclasses import dataclass, field

    from megatron_pacore.config_cli import config_flags

    def parse_even(text: str) -> int:
        if int(text) % 2:
            raise ValueError(f"expected an even number, got {text}")
        return int(text)

    @dataclass(kw_only=True)
    class Job:
        keep: bool = True
        """keep things"""
        files: list[str] = field(default_factory=list, metadata={"nargs": "+"})
        """files"""
        size: int = field(default=2, metadata={"type": parse_even})
        """an even size"""
        generation: GenerationOptions
        """the generation part"""

    opts = dict(exclude=("generation.reference_order",), aliases={"generation.model": ("--checkpoint",)})
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Job, **opts)
    flags = config_flags(parser)
    assert {"--keep", "--no-keep", "--files", "--size", "--checkpoint", "--model", "--config"} <= flags
    assert "--reference-order" not in flags and "--help" not in flags
    cfg = config_from_args(Job, parser.parse_args(
        ["--no-keep", "--files", "a", "b", "--files", "c", "--checkpoint", "ck", "--size", "4"]))
    assert (cfg.keep, cfg.files, cfg.size, cfg.generation.model) == (False, ["a", "b", "c"], 4, "ck")
    assert config_from_args(Job, parser.parse_args(["--model", "m"])).keep is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--size", "3"])
    assert "argument --size: expected an even number, got 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--reference-order", "random"])
