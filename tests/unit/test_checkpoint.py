"""A uad checkpoint alone rebuilds its network (uad/checkpoint.py); opening a file never runs code from it;
bad files get one clear line."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import uad
from tests.conftest import compose_config
from tests.helpers import evil_checkpoints as evil
from uad import builders, convert_checkpoint
from uad.checkpoint import (
    NETWORK_GROUPS,
    CheckpointError,
    UnsafeCheckpointError,
    load_module,
    network_config,
    options,
    read_checkpoint,
)
from uad.evaluate import load_any
from uad.module import CHECKPOINT_FORMAT, CHECKPOINT_KEY


def _saved_module(cfg, path):
    module = builders.build_module(
        cfg, builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))
    )
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return module.eval()


def test_a_checkpoint_rebuilds_its_network_and_its_config_wins(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    saved = _saved_module(tiny_cfg(), tmp_path / "last.ckpt")
    images = torch.randn(2, 3, 64, 64)
    loaded, cfg = load_module(tmp_path / "last.ckpt")  # no command line: the checkpoint's config alone
    assert cfg.method.name == "featrec" and not loaded.training
    assert loaded.optimizer_factory is None  # predict, export and eval build no optimiser
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(images).anomaly_map, saved.net(images).anomaly_map)
    other = tiny_cfg("method.model.hidden_dim=32")  # a command line that disagrees with the checkpoint
    loaded, cfg = load_module(tmp_path / "last.ckpt", other)
    assert cfg.method.model.hidden_dim == 256


def test_missing_and_foreign_checkpoints_get_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_module(tmp_path / "nope.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a uad checkpoint"):
        load_module(tmp_path / "foreign.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(
        CheckpointError,
        match=r"\(16 bytes\) is not a torch checkpoint \(it starts with b'not '\): Unsupported operand",
    ):
        load_module(tmp_path / "text.ckpt")


# -- untrusted files: nothing in them runs ----------------------------------------------------------


@pytest.mark.parametrize("case", sorted(evil.PICKLES))
def test_a_malicious_pickle_is_refused_unread_by_every_loader(case, tmp_path):
    marker = tmp_path / "pwned"
    path = evil.PICKLES[case](tmp_path, marker)
    for load in (read_checkpoint, load_module, uad.load, lambda p: load_any(p, None)):
        with pytest.raises(UnsafeCheckpointError) as refused:
            load(path)
        message = str(refused.value)
        assert "\n" not in message and "refused for safety" in message, message
        assert f"python -m uad.convert_checkpoint --trust {path}" in message
        assert not marker.exists()
    assert evil.live(path, marker)  # while a full unpickle runs it


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("zip", "names builtins.exec"),
        ("legacy_magic", "names builtins.exec"),
        ("legacy_tar", "legacy .tar archive"),
        ("dtypes_trick", "names numpy.dtypes.__builtins__.get by a computed (protocol 4) name"),
    ],
)
def test_the_refusal_says_what_the_file_holds(case, named, tmp_path):
    with pytest.raises(UnsafeCheckpointError, match=re.escape(named)):
        read_checkpoint(evil.PICKLES[case](tmp_path, tmp_path / "pwned"))


@pytest.mark.parametrize("case", sorted(evil.TARGETS))
def test_a_config_that_names_code_is_refused_and_nothing_is_instantiated(case, tiny_cfg, tmp_path):
    marker = tmp_path / "pwned"
    path = evil.TARGETS[case](tmp_path, marker, tiny_cfg())
    for cfg in (None, tiny_cfg()):
        with pytest.raises(
            CheckpointError, match=r"_target_='(numpy\.savetxt|torch\.load)', which names code"
        ):
            load_module(path, cfg)
    assert not marker.exists()
    assert evil.live_target(path, marker)  # uad's old load_module instantiated it


def _with_config(cfg, path, change) -> None:
    config = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in ("method", "backbone", "protocol")}
    change(config)
    torch.save({"state_dict": {}, CHECKPOINT_KEY: {"format": CHECKPOINT_FORMAT, "config": config}}, path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["method"]["model"].update(hidden=1),
            r"has 'method\.model\.hidden', a key conf/ does not",
        ),
        (lambda c: c["backbone"].update(_partial_=True), r"backbone\._partial_=True, which names code"),
        (lambda c: c["protocol"].update(score={"_target_": "os.system"}), r"protocol\.score to a mapping"),
        (  # a mapping where the method has none is data only when it is a recipe's optimiser or scheduler
            lambda c: c["method"].update(scheduler={"_target_": "numpy.savetxt", "fname": "x"}),
            r"method\.scheduler to a mapping with _target_",
        ),
        (lambda c: c["backbone"].update(weights="${oc.env:HOME}"), r"backbone\.weights='\$\{oc\.env:HOME\}'"),
        (
            lambda c: c["method"]["model"].update(hidden_dim="256"),
            r"method\.model\.hidden_dim='256' where conf",
        ),
        (lambda c: c["method"].update(name="../../etc/x"), r"its method '\.\./\.\./etc/x' is not one of"),
    ],
)
def test_a_config_is_plain_values_of_keys_conf_has(change, message, tiny_cfg, tmp_path):
    _with_config(tiny_cfg(), tmp_path / "x.ckpt", change)
    with pytest.raises(CheckpointError, match=message):
        load_module(tmp_path / "x.ckpt")


@pytest.mark.parametrize("overrides", [["method=patchcore"], ["method=dinomaly"], ["method=dualad_ho"], []])
def test_every_real_config_passes_the_check_unchanged(overrides, tiny_cfg):
    """What a training run saves rebuilds the same groups (slow-marked: every experiment recipe)."""
    cfg = tiny_cfg(*overrides)
    saved = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in NETWORK_GROUPS}
    rebuilt = network_config(saved, "x", cfg)
    assert {g: OmegaConf.to_container(rebuilt[g], resolve=True) for g in NETWORK_GROUPS} == saved


@pytest.mark.slow
@pytest.mark.parametrize("recipe", options("experiment"))
def test_every_experiment_recipe_passes_the_check_unchanged(recipe):
    cfg = compose_config([f"experiment={recipe}"])
    saved = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in NETWORK_GROUPS}
    rebuilt = network_config(saved, "x")
    assert {g: OmegaConf.to_container(rebuilt[g], resolve=True) for g in NETWORK_GROUPS} == saved


# -- files that are not checkpoints: one true line each ---------------------------------------------


def test_a_folder_an_empty_and_a_truncated_file_each_get_one_true_line(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    _saved_module(tiny_cfg(), run / "checkpoints" / "last.ckpt")
    (tmp_path / "zero.ckpt").touch()
    data = (run / "checkpoints" / "last.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(100)}, legacy, _use_new_zipfile_serialization=False)
    (tmp_path / "cut_legacy.pth").write_bytes(legacy.read_bytes()[:100])
    cases = {
        run: r"is a folder, not a file; did you mean '.*checkpoints/last\.ckpt'\?",
        tmp_path: "is a folder, not a file; give the checkpoint file inside it",
        tmp_path / "zero.ckpt": r"is empty \(0 bytes\)",
        tmp_path / "cut.ckpt": r"is a damaged or truncated torch zip file: PytorchStreamReader",
        tmp_path
        / "cut_legacy.pth": r"\(100 bytes\) is a damaged or truncated pickle \(torch's legacy format\)",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as err:
            read_checkpoint(path)
        assert "\n" not in str(err.value) and not isinstance(err.value, UnsafeCheckpointError)


def test_official_data_classes_load_in_the_legacy_format_and_with_numpy_1_names(tmp_path):
    """A legacy-format file whose numpy scalar is pickled under numpy 1.x's module name still opens."""
    path = tmp_path / "ckpt.pth.tar"
    content = {"state_dict": {"w": torch.ones(2)}, "best_metric": np.float64(0.25), "mean": np.ones(2)}
    torch.save(content, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    checkpoint = read_checkpoint(path)
    assert checkpoint["best_metric"] == 0.25 and checkpoint["mean"].tolist() == [1.0, 1.0]
    torch.testing.assert_close(checkpoint["state_dict"]["w"], torch.ones(2))


# -- converting a file the user trusts --------------------------------------------------------------


class _Config:
    """A config object as some official code pickles it (not plain data)."""

    def __init__(self) -> None:
        self.lr = 0.1


def test_convert_checkpoint_needs_trust_and_writes_plain_data_next_to_the_file(tmp_path, capsys):
    path = tmp_path / "ckpt.pth.tar"
    arch = {"net": [1, 2]}
    content = {"state_dict": {"w": torch.ones(2)}, "best": np.float64(0.5), "arch": arch, "cfg": _Config()}
    torch.save(content, path)
    with pytest.raises(UnsafeCheckpointError, match=r"names tests\.unit\.test_checkpoint\._Config"):
        read_checkpoint(path)
    with pytest.raises(SystemExit):
        convert_checkpoint.main([str(path)])  # no --trust: nothing is read
    assert not (tmp_path / "ckpt.converted.pth.tar").exists()
    assert convert_checkpoint.main(["--trust", str(path)]) == 0
    out = capsys.readouterr().out.strip()
    assert (
        out.startswith(f"wrote '{tmp_path / 'ckpt.converted.pth.tar'}'")
        and "cfg (tests.unit.test_checkpoint._Config)" in out
    )
    converted = read_checkpoint(tmp_path / "ckpt.converted.pth.tar")
    assert converted["best"] == 0.5 and converted["arch"] == arch and "cfg" not in converted
    torch.testing.assert_close(converted["state_dict"]["w"], torch.ones(2))
    assert convert_checkpoint.main(["--trust", str(tmp_path / "ckpt.converted.pth.tar")]) == 0
    assert "already opens safely" in capsys.readouterr().out


def test_a_whole_pickled_model_converts_to_its_state_dict(tmp_path):
    model = torch.nn.Linear(2, 3)
    torch.save({"model": model}, tmp_path / "m.pth")
    out, dropped = convert_checkpoint.convert(tmp_path / "m.pth")
    assert dropped == [] and set(read_checkpoint(out)["model"]) == {"weight", "bias"}
