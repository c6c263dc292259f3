"""Malicious checkpoints, built in the test: each would write a marker file if opening it ran its code.

Every builder returns the file's path. `live(path, marker)` proves a file is really malicious: a full unpickle
(what uad did before it read weights-only) writes the marker.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import pickletools
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from uad.module import CHECKPOINT_FORMAT, CHECKPOINT_KEY


class Payload:
    """Unpickled, it calls exec: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _uad_entry(config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "config": config or {"method": {"name": "featrec"}}}


def zip_pickle(folder: Path, marker: Path) -> Path:
    """The normal zip format, a `__reduce__` payload beside a state dict."""
    path = folder / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": Payload(marker)}, path)
    return path


def uad_ckpt(folder: Path, marker: Path) -> Path:
    """A file that looks like a uad last.ckpt, the payload in `hyper_parameters`."""
    path = folder / "evil.ckpt"
    torch.save({"state_dict": {}, CHECKPOINT_KEY: _uad_entry(), "hyper_parameters": Payload(marker)}, path)
    return path


def official_uniad(folder: Path, marker: Path) -> Path:
    """UniAD's train_val.py layout, the payload as its `config`."""
    path = folder / "ckpt.pth.tar"
    state = {
        "module.backbone.w": torch.zeros(1),
        "module.reconstruction.transformer.encoder.layers.0.w": torch.zeros(1),
    }
    torch.save({"epoch": 1, "state_dict": state, "config": Payload(marker)}, path)
    return path


def legacy(folder: Path, marker: Path) -> Path:
    """torch's legacy (non-zip) format, the payload in the main pickle."""
    path = folder / "legacy.pth.tar"
    content = {"state_dict": {"w": torch.zeros(2)}, "evil": Payload(marker)}
    torch.save(content, path, _use_new_zipfile_serialization=False)
    return path


def legacy_magic(folder: Path, marker: Path) -> Path:
    """A bare protocol-2 pickle: torch's legacy reader unpickles it as the file's magic number."""
    path = folder / "magic.pth"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    return path


def legacy_tar(folder: Path, marker: Path) -> Path:
    """torch's legacy .tar format, the payload in its `storages` member (read before anything is checked)."""
    path = folder / "legacy_tar.pth"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("sys_info", pickle.dumps({})), ("storages", pickle.dumps(Payload(marker)))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def dtypes_trick(folder: Path, marker: Path) -> Path:
    """A zip file whose data.pkl reaches exec through `numpy.dtypes` and a protocol-4 dotted name
    (`numpy.dtypes` + `__builtins__.get`), what the old allow-list let through."""
    path = folder / "dtypes.pth"
    torch.save({"state_dict": {}}, path)
    code = f"open({str(marker)!r}, 'w').write('ran')"

    def text(s: str) -> bytes:
        return pickle.SHORT_BINUNICODE + bytes([len(s.encode())]) + s.encode()

    payload = (
        pickle.PROTO + b"\x04"
        + text("numpy.dtypes") + text("__builtins__.get") + pickle.STACK_GLOBAL
        + text("exec") + pickle.TUPLE1 + pickle.REDUCE
        + pickle.BINUNICODE + len(code).to_bytes(4, "little") + code.encode() + pickle.TUPLE1 + pickle.REDUCE
        + pickle.POP + pickle.EMPTY_DICT + pickle.STOP
    )  # fmt: skip
    pickletools.dis(payload, out=io.StringIO())  # a well-formed pickle
    with zipfile.ZipFile(path) as src:
        members = {info.filename: src.read(info) for info in src.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for name, data in members.items():
            out.writestr(name, payload if name.endswith("/data.pkl") else data)
    return path


def _saved_config(cfg) -> dict[str, Any]:
    return {g: OmegaConf.to_container(cfg[g], resolve=True) for g in ("method", "backbone", "protocol")}


def target_savetxt(folder: Path, marker: Path, cfg) -> Path:
    """Plain data only (reads weights-only), but its config's optimiser is `numpy.savetxt` of the marker."""
    config = _saved_config(cfg)
    config["method"]["optimizer"] = {"_target_": "numpy.savetxt", "fname": str(marker), "X": [[1.0]]}
    path = folder / "target_savetxt.ckpt"
    torch.save({"state_dict": {}, CHECKPOINT_KEY: _uad_entry(config)}, path)
    return path


def target_torchload(folder: Path, marker: Path, cfg) -> Path:
    """Plain data only, but its config's model is `torch.load(weights_only=False)` of a payload file."""
    config = _saved_config(cfg)
    inner = folder / "inner.pth"
    torch.save({"evil": Payload(marker)}, inner)
    config["method"]["model"] = {"_target_": "torch.load", "f": str(inner), "weights_only": False}
    path = folder / "target_torchload.ckpt"
    torch.save({"state_dict": {}, CHECKPOINT_KEY: _uad_entry(config)}, path)
    return path


PICKLES: dict[str, Callable[[Path, Path], Path]] = {
    "zip": zip_pickle,
    "uad_ckpt": uad_ckpt,
    "official_uniad": official_uniad,
    "legacy": legacy,
    "legacy_magic": legacy_magic,
    "legacy_tar": legacy_tar,
    "dtypes_trick": dtypes_trick,
}
TARGETS = {"target_savetxt": target_savetxt, "target_torchload": target_torchload}


def live(path: Path, marker: Path) -> bool:
    """Whether a full unpickle of `path` writes the marker (the file really is malicious)."""
    with contextlib.suppress(Exception):  # the payload runs before torch finds a file malformed
        torch.load(path, map_location="cpu", weights_only=False)
    return marker.exists()


def live_target(path: Path, marker: Path) -> bool:
    """Whether instantiating the config of a `_target_` file, as uad did before, writes the marker."""
    method = torch.load(path, weights_only=True)[CHECKPOINT_KEY]["config"]["method"]
    for part in method.values():
        if isinstance(part, dict) and str(part.get("_target_")).split(".")[0] in ("numpy", "torch"):
            instantiate(part)
    return marker.exists()
