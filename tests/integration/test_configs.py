"""Every option of every config group composes into a config that resolves (no missing keys, no typos)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_config
from uad.builders import build_protocol

GROUPS = [
    "method",
    "backbone",
    "dataset",
    "protocol",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
]


def _options(group: str) -> list[str]:
    """The choices of a group; `_base.yaml` holds shared keys and is not one."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes_and_resolves(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path, data_dir=tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["mode"] in ("train", "describe")
    for key in ("method", "backbone", "dataset", "protocol", "trainer"):
        assert resolved[key], f"{group}={option} leaves '{key}' empty"
    if group not in ("experiment", "debug"):  # those two are global: they set keys of other groups
        chosen = resolved[group] or {}
        expected = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
        if "name" in (expected or {}):
            assert chosen["name"] == expected["name"]


def test_each_method_names_a_protocol_preset(tmp_path):
    """A method config names its protocol in its defaults; every protocol file is a preset with its own
    name (no alias file per method)."""
    for preset in _options("protocol"):
        assert OmegaConf.load(CONF_DIR / "protocol" / f"{preset}.yaml").get("name") == preset
    for method in _options("method"):
        cfg = compose_config([f"method={method}"], output_dir=tmp_path, data_dir=tmp_path)
        assert cfg.protocol.name in _options("protocol"), f"method={method}"


def test_command_line_protocol_overrides_the_methods(tmp_path):
    cfg = compose_config(["protocol=dinomaly392"], output_dir=tmp_path, data_dir=tmp_path)
    assert (cfg.protocol.image_size, cfg.protocol.crop_size, cfg.protocol.eval_size) == (448, 392, 256)


def test_trainer_keys_are_lightning_arguments(tmp_path):
    import inspect

    from lightning.pytorch import Trainer

    cfg = compose_config([], output_dir=tmp_path, data_dir=tmp_path)
    accepted = set(inspect.signature(Trainer.__init__).parameters)
    unknown = [k for k in cfg.trainer if k != "_target_" and k not in accepted]
    assert not unknown, f"conf/trainer keys that Lightning's Trainer does not take: {unknown}"


# --- shared bases: each dataset / protocol file holds only its own keys ------------------------------------


def _own_files(group: str) -> list[str]:
    """The options of `group` that list `_base` (a protocol may extend another preset instead)."""
    return [
        o
        for o in _options(group)
        if "_base" in OmegaConf.load(CONF_DIR / group / f"{o}.yaml").get("defaults", [])
    ]


@pytest.mark.parametrize("group", ["dataset", "protocol"])
def test_files_list_the_base_first_and_repeat_none_of_its_values(group):
    base = OmegaConf.load(CONF_DIR / group / "_base.yaml")
    files = _own_files(group)
    assert len(files) >= 5, files
    for option in files:
        own = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
        assert list(own.defaults) == ["_base", "_self_"], (
            f"conf/{group}/{option}.yaml: defaults [_base, _self_]"
        )
        repeated = [k for k in own if k != "defaults" and k in base and own[k] == base[k]]
        assert not repeated, f"conf/{group}/{option}.yaml repeats {repeated} from conf/{group}/_base.yaml"
        missing = [k for k in base if OmegaConf.is_missing(base, k) and k not in own]
        assert not missing, f"conf/{group}/{option}.yaml must set {missing}"


def test_every_dataset_names_a_registered_reader(tmp_path):
    from uad.data import READERS

    for option in _options("dataset"):
        cfg = compose_config([f"dataset={option}"], output_dir=tmp_path, data_dir=tmp_path)
        assert cfg.dataset.reader in READERS, f"conf/dataset/{option}.yaml: reader {cfg.dataset.reader}"
        assert cfg.dataset.name == option


def test_the_label_does_not_choose_the_reader(tmp_path):
    from uad.builders import build_datamodule, build_protocol

    cfg = compose_config(
        ["dataset=mvtec", "dataset.name=my_mvtec_copy"], output_dir=tmp_path, data_dir=tmp_path
    )
    dm = build_datamodule(cfg, build_protocol(cfg))
    assert (dm.name, dm.reader) == ("my_mvtec_copy", "mvtec")
    assert cfg.task_name.endswith("-my_mvtec_copy")


@pytest.mark.parametrize(
    ("method", "protocol", "size", "resize"),
    [
        ("dinomaly", "dinomaly392", 392, "pil"),
        ("uniad", "uniad224", 224, "pil"),
        ("dualad_he", "dualad224", 224, "cv2"),
    ],
)
def test_a_method_names_its_protocol_and_the_dataset_reads_its_input(
    tmp_path, method, protocol, size, resize
):
    """No alias file per method, and a data module instantiated alone gets the protocol's input (not 224 px
    by default): the protocol is the one owner of the input pipeline."""
    from hydra.utils import instantiate

    cfg = compose_config([f"method={method}", "dataset=mvtec"], output_dir=tmp_path, data_dir=tmp_path)
    assert cfg.protocol.name == protocol and not (CONF_DIR / "protocol" / f"{method}.yaml").exists()
    dm = instantiate(cfg.dataset)
    assert (dm.transform.input_size, dm.transform.resize) == (size, resize)
    assert dm.transform == build_protocol(cfg).input
    override = compose_config([f"method={method}", "protocol=ader256"], output_dir=tmp_path)
    assert instantiate(override.dataset).transform.input_size == 256


@pytest.mark.parametrize(
    ("recipe", "base"),
    [
        ("dinomaly_visa", "dinomaly_mvtec"),
        ("dinomaly_realiad", "dinomaly_mvtec"),
        ("uniad_visa", "uniad_mvtec"),
        ("dualad_visa", "dualad_mvtec"),
    ],
)
def test_other_datasets_recipes_inherit_the_mvtec_one(recipe, base, tmp_path):
    """A recipe on another dataset is its MVTec recipe on that data plus the keys its own file sets."""
    child = compose_config([f"experiment={recipe}"], output_dir=tmp_path, data_dir=tmp_path)
    dataset = recipe.split("_")[1]
    parent = compose_config(
        [f"experiment={base}", f"dataset={dataset}"], output_dir=tmp_path, data_dir=tmp_path
    )
    own = OmegaConf.load(CONF_DIR / "experiment" / f"{recipe}.yaml")
    own.pop("defaults")
    assert OmegaConf.to_container(child) == OmegaConf.to_container(OmegaConf.merge(parent, own))


def test_quick_is_the_training_free_patchcore(tmp_path):
    cfg = compose_config(["experiment=quick"], output_dir=tmp_path, data_dir=tmp_path)
    assert (cfg.method.name, cfg.backbone.name, cfg.trainer.max_epochs) == ("patchcore", "effnet_lite0", 1)


def test_quick_dinomaly_is_counted_in_steps_that_the_schedule_spans(tmp_path):
    """experiment=quick_dinomaly is Dinomaly's measured short schedule: left to the trainer's default epoch
    limit (3) it would stop after ~21 of its steps on a small folder, with the learning rate at its peak."""
    cfg = compose_config(["experiment=quick_dinomaly"], output_dir=tmp_path, data_dir=tmp_path)
    assert (cfg.method.name, cfg.backbone.name) == ("dinomaly", "effnet_lite0")
    assert cfg.trainer.max_epochs == -1
    assert cfg.method.scheduler.total_steps == cfg.trainer.max_steps == 546
    assert cfg.method.scheduler.warmup_steps < cfg.method.model.hm_warmup_steps < cfg.trainer.max_steps


# --- debug=tiny: the tests' fast config ----------------------------------------------------------------


def test_debug_tiny_is_the_fast_featrec_run(tmp_path):
    cfg = compose_config(["debug=tiny"], output_dir=tmp_path, data_dir=tmp_path)
    assert (cfg.method.name, cfg.protocol.name, cfg.protocol.image_size) == ("featrec", "r224", 64)
    assert (cfg.trainer.max_epochs, cfg.trainer.accelerator, cfg.dataset.num_workers) == (1, "cpu", 0)
    assert dict(cfg.dataset.synthetic) == {
        "seed": 0,
        "image_size": 96,
        "train_per_class": 6,
        "test_good": 2,
        "test_per_defect": 1,
    }
    assert not cfg.get("logger")
    assert cfg.callbacks.progress is None and cfg.callbacks.checkpoint.filename == "last"  # probe W6


def test_command_line_choices_win_over_debug_tiny(tmp_path):
    cfg = compose_config(["debug=tiny", "method=uniad", "callbacks=default"], output_dir=tmp_path)
    assert (cfg.method.name, cfg.protocol.name, cfg.protocol.image_size) == ("uniad", "uniad224", 64)
    assert "checkpoint" in cfg.callbacks


@pytest.mark.parametrize(
    ("recipe", "every", "metric", "flip", "aupro_thresholds"),
    [
        ("uniad_mvtec", 10, "P-AUROC", True, None),  # UniAD train_val.py + eval_helper.py
        ("uniad_visa", 10, "P-AUROC", True, None),
        ("dualad_mvtec", 20, "I-AUROC", False, 200),  # DualAD train_val.py + cal_pro_score
        ("dinomaly_mvtec", None, "I-AUROC", False, 200),  # Dinomaly: the last iteration, compute_pro
    ],
)
def test_paper_recipes_report_as_their_papers(recipe, every, metric, flip, aupro_thresholds, tmp_path):
    cfg = compose_config([f"experiment={recipe}"], output_dir=tmp_path, data_dir=tmp_path)
    assert (cfg.selection.every_n_epochs, cfg.selection.metric) == (every, metric)
    protocol = build_protocol(cfg)
    assert (protocol.flip_auroc, protocol.aupro_thresholds) == (flip, aupro_thresholds)
