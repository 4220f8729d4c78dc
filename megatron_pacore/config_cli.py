"""Command-line flags derived from the config dataclasses, and the configs built from them.

Every leaf field of a config tree becomes one flag named after the field (`max_tokens` ->
`--max-tokens`, wherever it nests), with the field's docstring as `--help`. A field's
`metadata` may refine its flag: `flag` (another name), `choices`, `type` (a parser of the
flag's text; its ValueError is the flag's error), `nargs` (a list field's flag may repeat:
the values add up), `metavar`, or `cli: False` (YAML only). A boolean that defaults to False
is a switch (`--stream`); one that defaults to True has `--no-` too (`--no-dedup`); a dict
field takes repeatable `KEY=VALUE` pairs (values parsed as JSON where they parse). A command
may leave fields out (`exclude`: fields its job refuses) or give a field more flags
(`aliases`: `--checkpoint` for generation.model in curriculum stage 2).

Every command also takes `--config FILE.yaml` and positional dotted `KEY=VALUE` overrides.
Precedence, lowest first: the dataclass defaults, the YAML file, the flags given, the
overrides. A flag not given leaves the lower layers alone (its argparse default is SUPPRESS).

This module is the shared argument wiring of `pacore infer`, `pacore eval` and
tools/build_curriculum.py: the jobs (infer.py, eval/, data/) take configs and never import
a command line.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import sys
import typing
from typing import Any, Callable, Mapping, Optional, Sequence, Type, TypeVar

from megatron_pacore.config import load_config

T = TypeVar("T")
_DEST_PREFIX = "cfg:"  # argparse dests of config fields: "cfg:" + the dotted path


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field name: the docstring written under it} from the class's source (the
    interpreter keeps no attribute docstrings)."""
    module = sys.modules[cls.__module__]
    path = getattr(module, "__file__", None)
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            docs: dict[str, str] = {}
            body = node.body
            for stmt, nxt in zip(body, body[1:]):
                if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                        and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                        and isinstance(nxt.value.value, str)):
                    docs[stmt.target.id] = " ".join(nxt.value.value.split())
            return docs
    return {}


def _leaves(cls: type, prefix: str = ""):
    """(dotted path, field, its type, its owner class) for every leaf field of a config tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _leaves(kind, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{f.name}", f, kind, cls


def _flag(f: dataclasses.Field) -> str:
    """`--max-tokens` for max_tokens, unless the field's metadata names another flag."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _scalar(kind: Any) -> Any:
    """int for Optional[int], etc."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if typing.get_origin(kind) is typing.Union and len(args) == 1 else kind


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if value in (None, "", {}, [], False):
        return ""
    return f" (default: {','.join(value) if isinstance(value, list) else value})"


def parse_key_values(pairs: list[str], flag: str = "--vllm-arg") -> dict[str, Any]:
    """["tensor_parallel_size=2", 'hf_overrides={"rope_scaling": ...}'] -> dict: values are
    JSON where they parse (numbers, booleans, objects such as hf_overrides for YaRN rope
    scaling), else the plain string; dashes in keys become underscores."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{flag} must be KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def config_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of `parser` (a boolean's `--no-` form too), but -h/--help."""
    return {s for action in parser._actions for s in action.option_strings} - {"-h", "--help"}


def _parse_text(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` for argparse: its ValueError's own words become the flag's error (argparse
    would otherwise print only "invalid <function name> value")."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parse.__name__
    return convert


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, exclude: Sequence[str] = (),
                         aliases: Optional[Mapping[str, Sequence[str]]] = None) -> None:
    """One flag per leaf field of `cls` (see the module doc), `--config` and overrides.

    `exclude`: dotted paths of fields that get no flag; `aliases`: dotted path -> more flags.
    """
    seen: dict[str, str] = {}
    groups: dict[type, Any] = {}
    for path, f, kind, owner in _leaves(cls):
        meta = f.metadata
        if meta.get("cli", True) is False or path in exclude:
            continue
        flags = [*(aliases or {}).get(path, ()), _flag(f)]  # usage lines show the first
        for flag in flags:
            if flag in seen:
                raise TypeError(f"{cls.__name__}: fields {seen[flag]} and {path} would share the flag {flag}")
            seen[flag] = path
        if owner is cls:
            group: Any = parser
        else:
            summary = " ".join((owner.__doc__ or "").split("\n\n")[0].split())
            group = groups.get(owner) or parser.add_argument_group(owner.__name__, summary)
            groups[owner] = group
        kw: dict[str, Any] = dict(dest=_DEST_PREFIX + path, default=argparse.SUPPRESS,
                                  help=field_docs(owner).get(f.name, "") + _default_text(f))
        base = _scalar(kind)
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction if f.default is True else "store_true"
        elif typing.get_origin(base) is dict:
            kw.update(action="append", metavar="KEY=VALUE")  # parsed in config_from_args
        else:
            kw["type"] = _parse_text(meta["type"]) if "type" in meta else base if base in (int, float) else str
            if "choices" not in meta:
                kw["metavar"] = f.name.upper()
            for key in ("choices", "nargs", "metavar"):
                if key in meta:
                    kw[key] = list(meta[key]) if key == "choices" else meta[key]
            if "nargs" in meta and typing.get_origin(base) is list:
                kw["action"] = "extend"  # --decontaminate a.jsonl --decontaminate b.jsonl: both
        group.add_argument(*flags, **kw)
    parser.add_argument("--config", metavar="FILE.yaml", default=None,
                        help=f"a YAML file of {cls.__name__} fields (see README); flags and overrides win over it")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides of config fields, e.g. generation.sampling.seed=0 "
                             "(after a flag that takes several values, such as --widths, put them after --)")


def config_from_args(cls: Type[T], args: argparse.Namespace) -> T:
    """The config of `cls` from the flags given, `--config` and the overrides."""
    flags = {path: (f, kind) for path, f, kind, _ in _leaves(cls)}
    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_DEST_PREFIX):
            continue
        f, kind = flags[dest[len(_DEST_PREFIX):]]
        path = dest[len(_DEST_PREFIX):].split(".")
        if typing.get_origin(_scalar(kind)) is dict:
            value = parse_key_values(value, _flag(f))
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return load_config(cls, getattr(args, "config", None), list(getattr(args, "overrides", []) or []), values)


def parse(cls: Type[T], argv: Optional[list[str]] = None, prog: Optional[str] = None) -> T:
    """A whole command line for `cls` alone (scripts with one config)."""
    parser = argparse.ArgumentParser(prog=prog, description=(cls.__doc__ or "").split("\n")[0])
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))
