"""Reading checkpoints without trusting them.

Opening a file never runs code from it. Every checkpoint (a uad `last.ckpt`, an official `model.pth` or
`ckpt.pth.tar`) is read by `torch.load(weights_only=True)`: tensors, plain containers, numbers and strings,
plus the few data classes the official files pickle (`SAFE_GLOBALS`). A file that names anything else is
refused unread with one line that says how to convert a file the user trusts (`uad.convert_checkpoint`).

A uad `last.ckpt` holds the trainable state and the config groups it was trained with (`checkpoint["uad"]`,
written by `AnomalyModule`), so a checkpoint alone is a model. That config is data: the network is rebuilt
from the method, backbone and protocol *names* it gives, composed from `conf/` as `run.py` would, with the
file's plain values (numbers, strings, booleans, lists of them) checked against the keys `conf/` has.
Nothing from the file reaches Hydra's `instantiate`; a `_target_` that differs from `conf/`'s is refused.
"""

from __future__ import annotations

import argparse
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, OmegaConf, open_dict

from uad.builders import build_encoder, build_module, build_net, build_protocol
from uad.errors import UserError
from uad.module import CHECKPOINT_KEY, AnomalyModule
from uad.utils.logging import get_logger

log = get_logger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
NETWORK_GROUPS = ("method", "backbone", "protocol")  # the groups a checkpoint's network is rebuilt from
TRAINING_KEYS = ("optimizer", "scheduler")  # method keys a rebuilt network never builds
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")  # keys that make Hydra run code
CONVERT = "python -m uad.convert_checkpoint --trust"


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or not one of ours."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle names code or classes beyond plain data; refused without being run."""


# -- reading ----------------------------------------------------------------------------------------


class _EasyDictAsDict:
    """`easydict.EasyDict` in an official file (UniAD's and DualAD's configs) becomes an OrderedDict of its
    items: the weights-only reader fills only (ordered) dicts, and the `easydict` package is not needed."""

    def __new__(cls, *args: Any) -> OrderedDict:
        return OrderedDict()


def _safe_globals() -> list[Any]:
    """The data classes official checkpoints pickle beside their tensors, for `torch.load(weights_only=
    True)`: EasyDict configs, numpy scalars and arrays of plain dtypes (`best_metric`), argparse
    Namespaces."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray
    dtypes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"]
    names = [
        (fn, f"{module}.{fn.__name__}")
        for fn in (multiarray.scalar, multiarray._reconstruct)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    ]
    return [(_EasyDictAsDict, "easydict.EasyDict"), *names, np.ndarray, np.dtype, *dtypes, argparse.Namespace]


SAFE_GLOBALS = _safe_globals()


def _not_a_file(path: Path) -> str | None:
    """Why `path` cannot be a checkpoint before it is opened (missing, a folder, empty), or None."""
    if path.is_dir():
        inside = path / "checkpoints" / "last.ckpt"
        hint = f"; did you mean '{inside}'?" if inside.is_file() else "; give the checkpoint file inside it"
        return f"checkpoint '{path}' is a folder, not a file{hint}"
    if not path.exists():
        return (
            f"checkpoint '{path}' does not exist; give a uad last.ckpt (<run folder>/checkpoints/last.ckpt) "
            "or, to mode=eval, an official checkpoint"
        )
    if path.stat().st_size == 0:
        return f"checkpoint '{path}' is empty (0 bytes); copy or save it again"
    return None


CODE = "which could run code when opened"


def _pickle_bytes(path: Path) -> bytes:
    """The main pickle of a torch file: `data.pkl` of the zip format, else the file (legacy format)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            return archive.read(name) if name else b""
    return path.read_bytes()


def _computed_names(path: Path) -> tuple[list[str], bool]:
    """The names a pickle gives by opcodes the weights-only reader does not take (protocol 4's STACK_GLOBAL,
    INST), read with `pickletools` (nothing is built), and whether the pickle is well formed."""
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(_pickle_bytes(path)):
            if isinstance(arg, str):
                strings.append(arg)
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(".".join(strings[-2:]))
            elif op.name == "INST":
                names.append(str(arg).replace(" ", "."))
    except Exception:  # damaged, or no pickle: the names read so far
        return names, False
    return names, True


def _data_names() -> set[str]:
    """The names the weights-only reader builds: torch's own list and SAFE_GLOBALS."""
    from torch._weights_only_unpickler import _get_allowed_globals  # torch's list has no public name

    ours = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS if not isinstance(g, tuple)}
    return (
        set(_get_allowed_globals())
        | ours
        | {name for g in SAFE_GLOBALS if isinstance(g, tuple) for name in g[1:]}
    )


def _named_code(message: str, path: Path) -> str | None:
    """What the weights-only reader's refusal says the file holds and why that is unsafe, in a few words;
    None when the refusal is not about code (a damaged file, or no pickle at all)."""
    if "legacy .tar format" in message:
        return "a torch legacy .tar archive, whose pickles cannot be read without running them"
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)
    if found:
        name = found.group(1)
        return f"a pickle that names {name if '.' in name else 'builtins.' + name}, {CODE}"
    found = re.search(r"reduce for unrecognized function (.+?)(?: which belongs|$)", message, re.M)
    if found:
        return f"a pickle that calls {found.group(1).strip()}, {CODE}"
    found = re.search(r"Can only (?:build|create new object for) .*?but got (\S+)", message)
    if found:
        return f"a pickle that builds {found.group(1).rstrip('>')}, {CODE}"
    opcode = re.search(r"Unsupported operand (\d+)", message)
    if not opcode:
        return None
    names, well_formed = _computed_names(path)
    names = [name for name in names if name not in _data_names()]
    if names:
        return f"a pickle that names {names[0]} by a computed (protocol 4) name, {CODE}"
    op = pickletools.code2op.get(chr(int(opcode.group(1))))
    if well_formed and op is not None:
        return f"a pickle with the {op.name} opcode (protocol 4), which the weights-only reader does not take"
    return None


def refusal(path: Path, what: str) -> str:
    """The one line for a file the weights-only reader refused as holding `what`."""
    return (
        f"checkpoint '{path}' refused for safety: it holds {what} (uad reads only tensors, containers, "
        f"numbers and strings). If you trust the file, convert it once: {CONVERT} {path}"
    )


def _unreadable(path: Path, err: Exception) -> str:
    """The one line for a file that is not a readable torch checkpoint (truncated, damaged, other)."""
    with path.open("rb") as f:
        head = f.read(4)
    size = path.stat().st_size
    if head.startswith(b"PK"):
        what = "a damaged zip file" if zipfile.is_zipfile(path) else "a damaged or truncated torch zip file"
    elif head[:1] == b"\x80":
        what = "a damaged or truncated pickle (torch's legacy format)"
    else:
        what = f"not a torch checkpoint (it starts with {head!r})"
    detail = re.search(r"WeightsUnpickler error:\s*(\S.*)", str(err))  # past torch's advice to unpickle
    reason = detail.group(1) if detail else (str(err).strip().splitlines() or [type(err).__name__])[0]
    reason = reason.split(". ")[0]  # torch's first sentence; the rest is advice
    return f"checkpoint '{path}' ({size} bytes) is {what}: {reason}; copy or save it again"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict saved at `path`, read with `torch.load(weights_only=True)` (no code in the file runs), or
    one error naming the file, what it holds and what to do."""
    path = Path(path)
    problem = _not_a_file(path)
    if problem:
        raise CheckpointError(problem)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # refused below if unread
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file fails anywhere in torch's reader
        refused = isinstance(err, (pickle.UnpicklingError, RuntimeError))
        what = _named_code(str(err), path) if refused else None
        if what is not None:
            raise UnsafeCheckpointError(refusal(path, what)) from None
        raise CheckpointError(_unreadable(path, err)) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"'{path}' holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


# -- the config: names from conf/, plain values from the file -----------------------------------------


def checkpoint_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The config groups a uad checkpoint was trained with."""
    own = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(own, dict) or not own.get("config"):
        raise CheckpointError(
            f"'{path}' is not a uad checkpoint (no '{CHECKPOINT_KEY}' entry with the run's config); give the "
            f"last.ckpt of a uad run, or an official checkpoint to mode=eval with method= and backbone="
        )
    if not isinstance(own["config"], dict):
        raise CheckpointError(f"'{path}': its '{CHECKPOINT_KEY}' config is a {type(own['config']).__name__}")
    return own["config"]


def options(group: str) -> list[str]:
    """The choices of a config group: its files in conf/ (not the `_base` ones)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def saved_names(saved: dict[str, Any], path: str | Path) -> dict[str, str]:
    """{group: name} for the network groups of a checkpoint's config; each name must be a file of conf/."""
    names = {}
    for group in NETWORK_GROUPS:
        entry = saved.get(group)
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name not in options(group):
            raise CheckpointError(
                f"checkpoint '{path}': its {group} {_short(name)} is not one of conf/{group}/ "
                f"({', '.join(options(group))})"
            )
        names[group] = name
    return names


def compose_named(overrides: list[str]) -> DictConfig:
    """The real config for these group choices, composed from conf/ as `run.py` would, in a Hydra context of
    its own (a running app's is put back)."""
    if not CONF_DIR.is_dir():
        raise CheckpointError(
            f"uad's conf/ folder is not at '{CONF_DIR}'; run from a checkout of uad (pip install -e .)"
        )
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides)
    finally:
        restore_gh_from_backup(backup)


def _short(value: Any) -> str:
    """A value from a file, as it reads in one error line (cut at 80 characters)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _holds_hydra_key(value: Any) -> str | None:
    """The first Hydra key (`_target_: ...`) anywhere in `value`, or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in HYDRA_KEYS:
                return f"{key}: {_short(item)}"
            found = _holds_hydra_key(item)
            if found:
                return found
    if isinstance(value, list):
        return next(filter(None, map(_holds_hydra_key, value)), None)
    return None


def _plain(value: Any) -> bool:
    """A value a config may take from a file: None, a bool, number or string (no interpolation), or a
    list of such."""
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        return "${" not in value
    if isinstance(value, (list, tuple)):
        return all(map(_plain, value))
    return False


def _same_kind(value: Any, conf: Any) -> bool:
    """`value` may replace `conf`: None on either side, or the same kind (bool, number, string, list)."""
    if value is None or conf is None or conf == "???":
        return True
    kinds = (bool, (int, float), str, (list, tuple))
    return any(isinstance(conf, k) and isinstance(value, k) for k in kinds) and (
        isinstance(value, bool) == isinstance(conf, bool)
    )


@cache
def conf_training_targets() -> frozenset[str]:
    """Every optimiser and scheduler `_target_` that a method or recipe in conf/ chooses."""

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for name, item in node.items():
                if name in TRAINING_KEYS and isinstance(item, dict) and "_target_" in item:
                    yield item["_target_"]
                yield from walk(item)

    files = [*(CONF_DIR / "method").glob("*.yaml"), *(CONF_DIR / "experiment").glob("*.yaml")]
    return frozenset(t for path in files for t in walk(yaml.safe_load(path.read_text())))


def _recipe_mapping(value: Any, conf: Any) -> bool:
    """A mapping where the method's conf/ file has none (a recipe's scheduler where the method sets null):
    taken as data when its `_target_` is one conf/ names and its other values are plain. It is never built
    from the file: a rebuilt network gets no optimiser or scheduler."""
    return (
        conf is None
        and isinstance(value, dict)
        and value.get("_target_") in conf_training_targets()
        and all(_plain(item) for item in value.values())
    )


def checked_values(value: Any, conf: Any, key: str, source: str) -> Any:
    """`conf` (a group of the composed config, as plain containers) with `value` (the same group from the
    file at `source`) applied where it is a plain value of a key `conf` has; anything else is refused."""
    if isinstance(value, dict) and isinstance(conf, dict):
        merged = dict(conf)
        for name, item in value.items():
            sub = f"{key}.{name}"
            if name in HYDRA_KEYS or (isinstance(name, str) and name.startswith("_") and name.endswith("_")):
                if name not in conf or item != conf[name]:
                    raise CheckpointError(
                        f"{source}: its config sets {sub}={_short(item)}, which names code to run; a "
                        f"checkpoint's config may only hold values (conf/ has {conf.get(name)!r}), so it is "
                        "refused"
                    )
                continue
            if name not in conf:
                raise CheckpointError(
                    f"{source}: its config has '{sub}', a key conf/ does not have; the file is refused (it "
                    "was not written by this version of uad)"
                )
            merged[name] = checked_values(item, conf[name], sub, source)
        return merged
    if value is None or _recipe_mapping(value, conf):
        return value
    code = _holds_hydra_key(value)
    if code:
        raise CheckpointError(
            f"{source}: its config sets {key} to a mapping with {code}, which names code to run; a "
            "checkpoint's config may only hold values, so it is refused"
        )
    if not _plain(value) or not _same_kind(value, conf):
        raise CheckpointError(
            f"{source}: its config sets {key}={_short(value)} where conf/ has {conf!r}; a checkpoint's "
            "config may only hold numbers, strings, booleans and lists of them, of the kind conf/ has"
        )
    return list(value) if isinstance(value, tuple) else value


def _named_on_command_line() -> set[str]:
    """The config groups the user chose on the command line (`method=...`), so that a message about the
    file's choice winning speaks only of choices the user made; empty outside a Hydra run."""
    if not HydraConfig.initialized():
        return set()
    return {item.split("=", 1)[0].lstrip("+~") for item in HydraConfig.get().overrides.task}


def network_config(saved: dict[str, Any], path: str | Path, cfg: DictConfig | None = None) -> DictConfig:
    """`cfg` (or, without one, the default config) whose method, backbone and protocol groups are composed
    from conf/ for the names the checkpoint gives, with its plain values checked and applied; the data
    and everything else stay the command line's."""
    named = _named_on_command_line()  # before composing, which may set Hydra's config of its own
    names = saved_names(saved, path)
    composed = compose_named([f"{group}={name}" for group, name in names.items()])
    if cfg is None:  # the default config as `run.py` in this folder would see it
        cfg = composed
        cfg.paths.root_dir = os.getcwd()
    else:
        cfg = cfg.copy()
    given = {g: cfg[g].get("name") for g in NETWORK_GROUPS if g in cfg and g in named}
    source = f"checkpoint '{path}'"
    with open_dict(cfg):
        for group in NETWORK_GROUPS:
            conf = OmegaConf.to_container(composed[group], resolve=True)
            cfg[group] = OmegaConf.create(checked_values(saved[group], conf, group, source))
    differ = [f"{g}={names[g]} (not {given[g]})" for g in names if given.get(g) not in (None, names[g])]
    log.info(
        "checkpoint '%s': rebuilding method=%s backbone=%s protocol=%s from conf/ and the file's values%s",
        path,
        names["method"],
        names["backbone"],
        names["protocol"],
        f"; the file's choice wins: {', '.join(differ)}" if differ else "",
    )
    return cfg


def load_module(
    path: str | Path, cfg: DictConfig | None = None, checkpoint: dict[str, Any] | None = None
) -> tuple[AnomalyModule, DictConfig]:
    """Rebuild the network of a uad checkpoint (encoder from its weights source, trainable state from the
    file) in eval mode, without an optimiser; returns it with the config it was built from. `checkpoint`:
    the file's content when the caller has already read it."""
    if checkpoint is None:
        checkpoint = read_checkpoint(path)
    cfg = network_config(checkpoint_config(checkpoint, path), path, cfg)
    module = build_module(cfg, build_net(cfg, build_encoder(cfg, build_protocol(cfg))), train=False)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint '{path}' has no state_dict of tensors")
    try:
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"], strict=False)
    except (KeyError, RuntimeError) as err:
        reason = " ".join(str(err).strip("'\"").split())[:300]
        raise CheckpointError(
            f"checkpoint '{path}' does not fit the method={cfg.method.name} backbone={cfg.backbone.name} "
            f"network its config names: {reason}"
        ) from None
    return module.eval(), cfg
