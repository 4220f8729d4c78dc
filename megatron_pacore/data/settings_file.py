"""A resumable job's settings file: written on the first run, compared on every rerun.

A job that appends its results to a directory and resumes there (`pacore eval`'s report,
the pool job, curriculum stage 2) must not mix results made with other settings in one
directory: the first run writes the settings that decide its results as DIR/<name>.json,
and every later run (a resume, or another shard of the same job) is refused with a
ValueError naming each setting that differs. `defaults` are the values of settings that a
newer version added, so that a directory written before still resumes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional


def check_settings_file(path: Path, settings: Mapping[str, Any], what: str,
                        defaults: Optional[Mapping[str, Any]] = None) -> None:
    """Write `settings` as JSON to `path`, or compare with those already there.

    Args:
        path: DIR/<name>.json.
        settings: JSON values that decide what the job writes.
        what: what the directory holds, for the error ("a pool", "stage-2 measurements").
        defaults: a setting missing from an existing file counts as this value.

    Raises ValueError when the file is unreadable or a setting differs (each named, with both
    values).
    """
    defaults = defaults or {}
    if path.is_file():
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: unreadable ({e.msg}); remove it or use another directory") from None
        diff = sorted(k for k in settings if theirs.get(k, defaults.get(k)) != settings[k])
        if diff:
            details = ", ".join(f"{k}: {theirs.get(k, defaults.get(k))!r} there, {settings[k]!r} here"
                                for k in diff)
            raise ValueError(f"{path.parent} holds {what} made with other settings ({details}); "
                             f"use another directory or the same settings")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")  # written whole, then renamed: a crash leaves no torn file
    tmp.write_text(json.dumps(dict(settings), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
