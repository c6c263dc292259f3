"""The results files of a run: `results.json` (the stable format users' scripts read), `results.csv`
and `results.md`, written atomically into the run directory, plus the rich table printed at the end.
`Results` is the format as a dataclass, and `Results.write` its one writer.

results.json, format "uad-results/1":
  {
    "format": "uad-results/1",
    "metrics": ["I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO"],
                                                 # then any a protocol adds, e.g. "AUPRO@200"
    "per_class": {class: {metric: value}},      # fractions in [0, 1]; null where undefined
    "mean": {metric: value},                     # unweighted mean over the classes that have the metric
    "per_defect": {class: {defect: {"I-AUROC": value, "count": n}}},
    "counts": {class: {"good": n, "defective": n}},
    "errors": {class: message},                  # classes whose evaluation failed, named with the cause
    "protocol": {...},                           # the evaluation protocol (see uad.metrics.EvalProtocol)
    "run": {"method": ..., "backbone": ..., "dataset": ..., "setting": ..., "seed": ...,  # uad.provenance
            "trainable_params": n, "frozen_params": n, "per_module": {...}, "throughput": {...},
            "selection": {...}, "feature_cache": {...},  # training runs
            "evaluated_checkpoint": {"path", "layout", "seconds"}},  # mode=eval
    "extra": {...}                               # e.g. Real-IAD sample-level metrics; "flipped_auroc":
                                                 # [{"class", "metric", "raw", "reported"}] under a
                                                 # protocol with flip_auroc (UniAD's tables); "thresholds"
  }
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from uad.metrics.functional import METRIC_NAMES
from uad.utils.io import write_json, write_text

FORMAT = "uad-results/1"


def class_mean(per_class: Mapping[str, Mapping[str, float]], metrics=METRIC_NAMES) -> dict[str, float | None]:
    """Unweighted mean over classes, as every paper reports; classes where a metric is NaN are skipped."""
    mean: dict[str, float | None] = {}
    for metric in metrics:
        values = [v[metric] for v in per_class.values() if _finite(v.get(metric))]
        mean[metric] = sum(values) / len(values) if values else None
    return mean


def _finite(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _clean(value: Any) -> Any:
    """NaN becomes null so that results.json stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def metric_names(per_class: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The seven metrics, then any others the classes have (e.g. "AUPRO@200"), in first-seen order."""
    names = list(METRIC_NAMES)
    for metrics in per_class.values():
        names += [k for k in metrics if k not in names]
    return names


@dataclass
class Results:
    """One run's results, the `uad-results/1` format of results.json. The evaluation builds it (metrics,
    counts, errors, protocol, the run's identity); the run's other parts then add theirs (`run`: parameter
    counts, throughput, test-set selection, feature cache, evaluated checkpoint; `extra`: calibrated
    thresholds) before its one write (`write`), so results.json is written once per run."""

    per_class: dict[str, dict[str, float | None]]
    protocol: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)
    per_defect: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return metric_names(self.per_class)

    @property
    def mean(self) -> dict[str, float | None]:
        return class_mean(self.per_class, self.metrics)

    def to_json(self) -> dict[str, Any]:
        """The content of results.json (NaN written as null)."""
        return _clean(
            {
                "format": FORMAT,
                "metrics": self.metrics,
                "per_class": {k: dict(v) for k, v in self.per_class.items()},
                "mean": self.mean,
                "per_defect": dict(self.per_defect),
                "counts": dict(self.counts),
                "errors": dict(self.errors),
                "protocol": dict(self.protocol),
                "run": dict(self.run),
                "extra": dict(self.extra),
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Results:
        """Results read back from results.json (its derived `metrics` and `mean` are recomputed)."""
        return cls(**{f.name: dict(data.get(f.name) or {}) for f in fields(cls)})

    def write(self, output_dir: str | Path) -> list[Path]:
        """Write results.json, results.csv and results.md atomically; return their paths."""
        output_dir = Path(output_dir)
        content = self.to_json()
        return [
            write_json(output_dir / "results.json", content),
            write_text(output_dir / "results.csv", to_csv(content)),
            write_text(output_dir / "results.md", to_markdown(content)),
        ]


def merge_results(parts: list[Results]) -> Results:
    """One table from several runs over disjoint classes (the class-separated setting)."""
    merged = Results({}, dict(parts[0].protocol), dict(parts[0].run))
    for part in parts:
        for key in ("per_class", "per_defect", "counts", "errors", "extra"):
            getattr(merged, key).update(getattr(part, key))
    flips = [f for part in parts for f in part.extra.get("flipped_auroc", [])]
    if "flipped_auroc" in merged.extra:  # one list per run: joined, not the last one kept
        merged.extra["flipped_auroc"] = flips
    return merged


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def table_rows(results: Mapping[str, Any]) -> list[list[str]]:
    rows = [[name, *(_fmt(m.get(k)) for k in results["metrics"])] for name, m in results["per_class"].items()]
    rows += [[name, *(["failed"] * len(results["metrics"]))] for name in results["errors"]]
    rows.append(["mean", *(_fmt(results["mean"].get(k)) for k in results["metrics"])])
    return rows


def to_markdown(results: Mapping[str, Any]) -> str:
    header = ["class", *results["metrics"]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    run = results.get("run", {})
    title = " / ".join(str(run[k]) for k in ("method", "backbone", "dataset", "setting") if k in run)
    out = [
        f"# Results{': ' + title if title else ''}",
        "",
        "Values in % (per class, then the unweighted mean).",
        "",
    ]
    out += lines
    if results["errors"]:
        out += ["", "## Failed classes", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()]
    out += ["", "## Protocol", ""] + [f"- {k}: {v}" for k, v in results["protocol"].items()]
    return "\n".join(out) + "\n"


def to_csv(results: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["class", *results["metrics"]])
    for name, metrics in [*results["per_class"].items(), ("mean", results["mean"])]:
        writer.writerow(
            [name, *("" if metrics.get(k) is None else repr(metrics[k]) for k in results["metrics"])]
        )
    return buffer.getvalue()


def print_table(results: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    run = results.get("run", {})
    title = " / ".join(str(run[k]) for k in ("method", "backbone", "dataset", "setting") if k in run)
    table = Table(title=f"Results (%) {title}".strip(), show_lines=False)
    table.add_column("class", style="bold")
    for metric in results["metrics"]:
        table.add_column(metric, justify="right")
    rows = table_rows(results)
    for row in rows[:-1]:
        table.add_row(*row)
    table.add_section()
    table.add_row(*rows[-1], style="bold")
    Console().print(table)
