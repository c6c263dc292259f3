"""The suite sweeper: Hydra's basic sweeper (the cartesian product of the swept values) plus the paper
pairings, so that

    python run.py -m                                   # every method x its paper backbones x every dataset
    python run.py -m method=uniad,dinomaly dataset=mvtec,visa    # these axes, each method on its backbones
    python run.py -m method.optimizer.lr=1e-4,2e-4     # a plain hyperparameter sweep of the default run

The suite (`hydra.sweeper.methods` x `hydra.sweeper.datasets`, each method on its
`hydra.sweeper.paper_backbones`) is swept only when the command line sweeps nothing; a job that names a
method but no backbone runs on each backbone that method's paper reports; a job that names a method and a
dataset with a paper recipe (`conf/experiment/<method>_<dataset>.yaml`) gets it (`hydra.sweeper.recipes`).

A comparison table (`experiment=seed_table` sets `hydra.sweeper.columns`, method -> recipe) runs one job per
column, `method=<column> experiment=<recipe>`, for every job of the command line's own sweep (e.g.
`dataset=mvtec,visa`); under `debug=tiny` each such job also gets `debug_overrides` and its column's
`debug_column_overrides` (random encoder weights, the synthetic data, masks small enough for the tiny grid),
except for keys the command line sets itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override


def expand_suite(
    overrides: list[Override],
    methods: Sequence[str],
    datasets: Sequence[str],
    paper_backbones: Mapping[str, Sequence[str]],
    recipes: Collection[str] = (),
) -> list[list[str]]:
    """The jobs (each a list of `key=value` overrides) of a sweep given its parsed overrides; `recipes` are
    the available `experiment` options (paper recipes, named `<method>_<dataset>`)."""
    keys = {o.get_key_element() for o in overrides}
    defaults = []
    if not any(o.is_sweep_override() for o in overrides):
        if "method" not in keys and methods:
            defaults.append(f"method={','.join(methods)}")
        if "dataset" not in keys and datasets:
            defaults.append(f"dataset={','.join(datasets)}")
    parsed = OverridesParser.create().parse_overrides(defaults)
    jobs = BasicSweeper.split_arguments([*parsed, *overrides], None)[0]
    if "backbone" not in keys:
        paired = []
        for job in jobs:
            backbones = paper_backbones.get(_value(job, "method") or "", [])
            paired += [[*job, f"backbone={b}"] for b in backbones] or [job]
        jobs = paired
    if "experiment" not in keys and recipes:
        jobs = [[*job, *_recipe(job, recipes)] for job in jobs]
    return jobs


def expand_columns(
    overrides: list[Override],
    columns: Mapping[str, str],
    debug_overrides: Sequence[str] = (),
    debug_column_overrides: Mapping[str, Sequence[str]] | None = None,
) -> list[list[str]]:
    """The jobs of a comparison table: the command line's sweep without its `experiment=` (the table's own)
    times one job per column (method -> recipe), as the module docstring says."""
    kept = [o for o in overrides if o.get_key_element() != "experiment"]
    keys = {o.get_key_element() for o in kept}
    jobs = []
    for job in BasicSweeper.split_arguments(kept, None)[0]:
        tiny = "debug=tiny" in job
        for method, recipe in columns.items():
            extra = [*debug_overrides, *(debug_column_overrides or {}).get(method, [])] if tiny else []
            extra = [o for o in extra if o.split("=", 1)[0] not in keys]
            jobs.append([*job, f"experiment={recipe}", f"method={method}", *extra])
    return jobs


def _value(job: list[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in job if o.startswith(f"{key}=")), None)


def _recipe(job: list[str], recipes: Collection[str]) -> list[str]:
    """`experiment=<method>_<dataset>` (or `<method family>_<dataset>`, e.g. dualad_mvtec for dualad_ho)
    when that paper recipe exists; the job's own method and backbone still win over the recipe's."""
    method, dataset = _value(job, "method"), _value(job, "dataset")
    if not method or not dataset:
        return []
    for name in (f"{method}_{dataset}", f"{method.split('_')[0]}_{dataset}"):
        if name in recipes:
            return [f"experiment={name}"]
    return []


class SuiteSweeper(BasicSweeper):
    """BasicSweeper whose default sweep is the suite of paper pairings (see the module docstring)."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        methods: Sequence[str] | None = None,
        datasets: Sequence[str] | None = None,
        paper_backbones: Mapping[str, Sequence[str]] | None = None,
        recipes: bool = True,
        columns: Mapping[str, str] | None = None,
        debug_overrides: Sequence[str] | None = None,
        debug_column_overrides: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.methods = list(methods or [])
        self.datasets = list(datasets or [])
        self.paper_backbones = {k: list(v) for k, v in (paper_backbones or {}).items()}
        self.recipes = recipes
        self.columns = dict(columns or {})
        self.debug_overrides = list(debug_overrides or [])
        self.debug_column_overrides = {k: list(v) for k, v in (debug_column_overrides or {}).items()}

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        if self.columns:
            jobs = expand_columns(overrides, self.columns, self.debug_overrides, self.debug_column_overrides)
            return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))
        recipes = self.hydra_context.config_loader.get_group_options("experiment") if self.recipes else []
        jobs = expand_suite(overrides, self.methods, self.datasets, self.paper_backbones, recipes)
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))
