"""`python -m uad.convert_checkpoint --trust FILE`: rewrite a checkpoint you trust as plain data.

uad opens checkpoints weights-only (`uad.checkpoint.read_checkpoint`) and refuses a file that names code or
classes beyond plain data. A file you trust (your own, or one from a source you trust) that is refused only
because of how it was saved (a pickled config object, a whole pickled model, torch's legacy .tar format,
pickle protocol 4) can be converted once. This is the only place uad unpickles a file in full, which runs
any code the file holds: it happens only when you name the file with `--trust`.

What is kept: tensors, dicts (any mapping: EasyDict, OrderedDict, mmcv-style configs), lists, tuples, sets,
numbers, strings, bytes and None; numpy scalars become numbers and numpy arrays tensors; an argparse
Namespace becomes a dict of its attributes; a pickled `nn.Module` becomes its state dict. Anything else is
dropped, and each dropped entry is named. The result is written next to the file as `<name>.converted<ext>`
(or `--out`), checked to open weights-only, and its path printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uad.checkpoint import CheckpointError, read_checkpoint
from uad.errors import UserError

PLAIN = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device, torch.Size)


def converted_path(path: Path) -> Path:
    """`ckpt.pth.tar` -> `ckpt.converted.pth.tar`, `last.ckpt` -> `last.converted.ckpt`."""
    stem, dot, rest = path.name.partition(".")
    return path.with_name(f"{stem}.converted{dot}{rest}")


def to_plain(obj: Any, key: str, dropped: list[str]) -> Any:
    """`obj` as data `torch.load(weights_only=True)` reads; entries of other types are left out and named
    in `dropped` (as `key (type)`). A dropped entry returns None; its container leaves it out."""
    if isinstance(obj, nn.Parameter):
        return obj.detach().clone()
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, nn.Module):
        return to_plain(obj.state_dict(), key, dropped)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, Mapping):
        out = {}
        for name, value in obj.items():
            if not isinstance(name, PLAIN):
                dropped.append(f"{key}[{name!r}] (a {type(name).__name__} key)")
                continue
            item = to_plain(value, f"{key}.{name}" if key else str(name), dropped)
            if item is not None or value is None:
                out[name] = item
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [to_plain(v, f"{key}[{i}]", dropped) for i, v in enumerate(obj)]
        kept = [item for item, value in zip(items, obj) if item is not None or value is None]
        return kept if isinstance(obj, list) else tuple(kept) if isinstance(obj, tuple) else set(kept)
    if isinstance(obj, PLAIN):
        return obj
    dropped.append(f"{key or 'the file'} ({type(obj).__module__}.{type(obj).__qualname__})")
    return None


def convert(path: Path, out: Path | None = None) -> tuple[Path, list[str]]:
    """Unpickle the trusted file at `path` in full, write its data to `out` (default `converted_path`),
    check that it opens weights-only; returns (out, the dropped entries)."""
    out = out or converted_path(path)
    if out.exists():
        raise UserError(f"'{out}' exists; move it away or give --out <another file>")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # the one full unpickle: --trust
    dropped: list[str] = []
    plain = to_plain(checkpoint, "", dropped)
    partial = out.with_name(out.name + ".partial")
    torch.save(plain, partial)
    os.replace(partial, out)
    read_checkpoint(out)
    return out, dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uad.convert_checkpoint",
        description="Rewrite a checkpoint you trust as plain data that uad opens safely. This unpickles the "
        "file in full, which runs any code it holds: only for files you trust.",
    )
    parser.add_argument("file", type=Path)
    parser.add_argument("--trust", action="store_true", help="confirm that you trust FILE (required)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: FILE.converted)")
    args = parser.parse_args(argv)
    if not args.trust:
        parser.error(f"converting '{args.file}' runs any code it holds; pass --trust if you trust the file")
    try:
        read_checkpoint(args.file)
        print(f"'{args.file}' already opens safely (weights-only); nothing to convert")
        return 0
    except CheckpointError as err:
        if not args.file.is_file() or args.file.stat().st_size == 0:  # missing, a folder, empty
            print(f"error: {err}", file=sys.stderr)
            return 1
    try:
        out, dropped = convert(args.file, args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        print(f"error: cannot unpickle '{args.file}' ({type(err).__name__}: {err})", file=sys.stderr)
        return 1
    note = f"; left out (not plain data): {', '.join(dropped)}" if dropped else ""
    print(f"wrote '{out}': the data of '{args.file}', opens weights-only{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
