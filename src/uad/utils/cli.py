"""One line for every error a user can fix, from wherever it comes: Hydra's own (an unknown group option,
a misspelt key, a bad override), a run folder that cannot be written, a `UserError`. A traceback is left
for bugs, and for everything with HYDRA_FULL_ERROR=1. Imports nothing heavy (run.py uses it first)."""

from __future__ import annotations

import difflib
import errno
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from uad.errors import RunInterrupted, UserError

CHOICE_VALUES_OFF = ("false", "off", "no", "0", "disable", "disabled")


def full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def stop(err: RunInterrupted) -> None:
    print(f"stopped: {err}", file=sys.stderr)
    sys.exit(err.exit_code)


def _overrides(argv: Sequence[str]) -> list[str]:
    return [a for a in argv if "=" in a and not a.startswith("-")]


def _groups(conf_dir: Path) -> dict[str, list[str]]:
    """Config group -> its options (the yaml files of conf/<group>/, `_base` left out)."""
    groups = {}
    for folder in sorted(p for p in conf_dir.rglob("*") if p.is_dir()):
        group = folder.relative_to(conf_dir).as_posix()
        options = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))
        if options and not group.startswith("hydra"):
            groups[group] = options
    return groups


def explain_choice(overrides: Sequence[str], conf_dir: Path) -> str | None:
    """`feature_cache=false`, `method=nope`: the group's valid options."""
    groups = _groups(conf_dir)
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key not in groups:
            continue
        bad = [v for v in value.split(",") if v.strip() and v.strip() not in (*groups[key], "null")]
        if bad and not any(c in value for c in "()[]{}"):
            hint = f"; to switch it off: {key}=none" if "none" in groups[key] else ""
            hint = hint if bad[0].lower() in CHOICE_VALUES_OFF else ""
            close = difflib.get_close_matches(bad[0], groups[key], n=1)
            mean = f" (did you mean {key}={close[0]}?)" if close and not hint else ""
            return (
                f"{key}={bad[0]}: no such option in config group '{key}'{mean}; choose one of: "
                f"{', '.join(groups[key])} (conf/{key}/){hint}"
            )
    return None


def explain_key(message: str, overrides: Sequence[str], keys_of: Callable[[str], list[str]]) -> str | None:
    """`trainer.max_epochz=3`: the keys that exist there, the nearest first."""
    match = re.search(r"Could not override '([^']+)'", message) or re.search(r"full_key: (\S+)", message)
    if not match:
        return None
    full_key = match.group(1)
    parent, _, leaf = full_key.rpartition(".")
    keys = keys_of(parent)
    close = difflib.get_close_matches(leaf, keys, n=1)
    mean = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    value = next((o.partition("=")[2] for o in overrides if o.lstrip("+~").startswith(full_key + "=")), "...")
    listed = f"keys under {parent or 'the top level'}: {', '.join(keys)}; " if keys else ""
    return f"{full_key} is not a config key; {mean}({listed}a new key is added with +{full_key}={value})"


def _keys_with(overrides: Sequence[str], conf_dir: Path) -> Callable[[str], list[str]]:
    def keys_of(parent: str) -> list[str]:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf

        usable = [o for o in overrides if "." not in o.partition("=")[0] or o.startswith("+")]
        try:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
                cfg = compose("config", overrides=usable)
            node = OmegaConf.select(cfg, parent) if parent else cfg
            return sorted(str(k) for k in node) if hasattr(node, "keys") else []
        except Exception:  # the listing is a courtesy; the message stands without it
            return []

    return keys_of


def _unparsable(overrides: Sequence[str]) -> str | None:
    """The first override Hydra's parser refuses."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception:
            return override
    return None


def _os_error(err: BaseException) -> OSError | None:
    while err is not None:
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


def explain(err: Exception, argv: Sequence[str], conf_dir: Path) -> str | None:
    """The one line for an error raised before or around the run (None: a bug, show the traceback)."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    overrides = _overrides(argv)
    if isinstance(err, UserError):
        return str(err)
    os_error = _os_error(err)
    if os_error is not None and os_error.filename:
        fix = "free some space" if os_error.errno == errno.ENOSPC else "give a writable hydra.run.dir="
        return f"cannot write '{os_error.filename}' ({os_error.strerror}); {fix}"
    message = str(err)
    if isinstance(err, MissingConfigException) or "Config group override" in message:
        return explain_choice(overrides, conf_dir) or message.strip().splitlines()[0]
    if isinstance(err, OverrideParseException):
        return (
            f"{_unparsable(overrides) or 'an override'}: {message.strip().splitlines()[0]}; quote a value "
            "that holds '=', spaces or brackets: \"key='value'\""
        )
    if isinstance(err, HydraException) or "is not in struct" in message:
        return (
            explain_choice(overrides, conf_dir)
            or explain_key(message, overrides, _keys_with(overrides, conf_dir))
            or " ".join(message.split())
        )
    return None


def one_line_errors(conf_dir: Path) -> None:
    """Make Hydra report the errors `explain` knows as one line (its own `run_and_report` prints a
    traceback or a paragraph). Hydra calls that function by its module name, so it is replaced there."""
    from hydra._internal import utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as err:
            if full_errors():
                raise
            line = explain(err, sys.argv[1:], conf_dir)
            if line is None:
                caught = err
                return original(lambda: _reraise(caught))
            fail(line)

    hydra_utils.run_and_report = run_and_report


def _reraise(err: Exception) -> Any:
    raise err


def quiet_libraries() -> None:
    """Lightning's advertisements and library deprecation notes say nothing about the run."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.getMessage()).startswith("💡")
    )
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(lightning|torch|timm|hydra)")
