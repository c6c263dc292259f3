"""Dataset readers: one decorated function per dataset layout, turning a root folder into a catalog.

A reader returns `{class name: loader}`; a loader reads that class's `Splits` (train, test) on demand, so
choosing classes is cheap. `open_catalog` checks the root and the reader's options first; `check_counts`
compares what was read with the official numbers (`../shared/reference/data_metrics_frameworks.md` §1).
"""

from __future__ import annotations

import csv
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from uad.data.samples import (
    DatasetLayoutError,
    Sample,
)
from uad.utils.logging import get_logger

log = get_logger(__name__)


class Splits(NamedTuple):
    train: list[Sample]
    test: list[Sample]


Catalog = dict[str, Callable[[], Splits]]


@dataclass(frozen=True)
class Reader:
    """A registered layout: its reader, what the tree looks like, where it is published, official counts.

    counts: {class: (train good, test good, test defective)}; class_names: the official classes (the keys
    of `counts` when it is given).
    """

    name: str
    title: str
    read: Callable[..., Catalog]
    layout: str
    published: str
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()

    @property
    def options(self) -> tuple[str, ...]:
        """The reader's keyword options (`dataset.<option>` in the config)."""
        params = list(inspect.signature(self.read).parameters.values())[1:]
        return tuple(p.name for p in params)


READERS: dict[str, Reader] = {}
SPLIT_COUNTS = "split_counts.csv"  # beside this file: every data set's official counts, with their sources


def official_counts(dataset: str) -> dict[str, tuple[int, int, int]]:
    """{class: (train good, test good, test defective)} of `dataset`'s official split, from SPLIT_COUNTS."""
    lines = resources.files(__package__).joinpath(SPLIT_COUNTS).read_text().splitlines()
    rows = csv.DictReader(line for line in lines if not line.startswith("#"))
    return {
        row["class"]: (int(row["train"]), int(row["test_good"]), int(row["test_defective"]))
        for row in rows
        if row["dataset"] == dataset
    }


def reader(
    name: str,
    title: str,
    layout: str,
    published: str,
    counts: dict[str, tuple[int, int, int]] | None = None,
    class_names: tuple[str, ...] = (),
) -> Callable[[Callable[..., Catalog]], Callable[..., Catalog]]:
    """Register `fn(root, **options) -> Catalog` as reader `name` (a dataset config's `reader:`)."""

    def register(fn: Callable[..., Catalog]) -> Callable[..., Catalog]:
        READERS[name] = Reader(
            name, title, fn, layout, published, dict(counts or {}), class_names or tuple(counts or ())
        )
        return fn

    return register


def get_reader(name: str) -> Reader:
    """The registered reader `name` (the config's `dataset.reader`); an unknown one lists the readers."""
    if name not in READERS:
        raise DatasetLayoutError(
            f"dataset.reader '{name}' is not one of {sorted(READERS)}. Set `reader:` in your "
            f"conf/dataset/<name>.yaml, or dataset.reader=<one of them> on the command line."
        )
    return READERS[name]


def check_root(name: str, root: Path) -> None:
    """The root of reader `name` must be a folder; the error shows the layout it must hold. Cheap (no
    torch): `run.py` calls it before the heavy imports (uad.config_checks)."""
    if not root.is_dir():
        spec = get_reader(name)
        raise DatasetLayoutError(
            f"{spec.title} root '{root}' does not exist. Set dataset.root to the folder that holds:\n"
            f"{spec.layout}\n{spec.published}"
        )


def open_catalog(name: str, root: Path, options: dict[str, Any] | None = None) -> Catalog:
    """The classes found under `root` by reader `name`, each with its loader; one clear error otherwise."""
    spec = get_reader(name)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise DatasetLayoutError(
            f"dataset.reader '{name}' has no option(s) {unknown}; its options are {list(spec.options)}"
        )
    check_root(name, root)
    catalog = spec.read(root, **options)
    if not catalog:
        raise DatasetLayoutError(f"no {spec.title} classes found under '{root}'. Expected:\n{spec.layout}")
    return catalog


def select_classes(catalog: Catalog, requested: list[str] | None, root: Path) -> list[str]:
    """The requested classes (all, sorted, when None); an unknown one lists the available classes."""
    available = sorted(catalog)
    if requested is None:
        return available
    unknown = [c for c in requested if c not in catalog]
    if unknown:
        raise DatasetLayoutError(
            f"dataset.classes: {unknown} not found under '{root}'. Available: {available}"
        )
    return list(requested)


def count(splits: Splits) -> tuple[int, int, int]:
    """(train, test good, test defective) of one class."""
    good = sum(s.label == 0 for s in splits.test)
    return len(splits.train), good, len(splits.test) - good


def check_counts(name: str, found: dict[str, Splits], strict: bool) -> None:
    """Compare each class with the official numbers; strict raises naming every class that differs,
    otherwise (a partial copy) the differences are logged."""
    spec = get_reader(name)
    problems = []
    for class_name, splits in found.items():
        if spec.class_names and class_name not in spec.class_names:
            problems.append(
                f"'{class_name}' is not a {spec.title} class (those are {list(spec.class_names)})"
            )
        elif class_name in spec.counts and count(splits) != spec.counts[class_name]:
            have, want = count(splits), spec.counts[class_name]
            problems.append(
                f"'{class_name}' has {have[0]} train / {have[1]} good test / {have[2]} defective test "
                f"images; the official copy has {want[0]} / {want[1]} / {want[2]}"
            )
    if not problems:
        if spec.counts and len(found) < len(spec.counts):
            log.info("%s: %d of its %d classes selected", spec.title, len(found), len(spec.counts))
        return
    text = f"{spec.title} differs from the official dataset: " + "; ".join(problems)
    if strict:
        raise DatasetLayoutError(
            f"{text}. Re-download the class, or set dataset.strict=false to accept a partial copy."
        )
    log.warning("dataset.strict=false, accepting a partial copy. %s", text)
