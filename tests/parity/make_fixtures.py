"""Make a parity fixture: run the official model class of one method on the CPU and record numbers only.

    python tests/parity/make_fixtures.py --method dinomaly --official /path/to/Dinomaly-checkout
    python tests/parity/make_fixtures.py --method dinomaly --backbone dinov2_vitl14_reg --official ...
    python tests/parity/make_fixtures.py --method uniad --official /path/to/UniAD-checkout
    python tests/parity/make_fixtures.py --method dualad_he --official /path/to/DualAD-checkout
    python tests/parity/make_fixtures.py --method dualad_ho --official /path/to/DualAD-checkout
    python tests/parity/make_fixtures.py --method rd4ad --official /path/to/RD4AD-checkout
    cd /tmp && python .../tests/parity/make_fixtures.py --method vitad --official /path/to/ADer-checkout
    python tests/parity/make_fixtures.py --method mambaad --official /path/to/MambaAD-checkout \
        --ader /path/to/ADer-checkout --mamba-ssm /path/to/mamba_ssm-2.3.2.post1

The checkout must be at the commit named in `OFFICIAL` (../shared/reference/methods.md), with its
`.cuda()` calls in the reconstruction models replaced by `.cpu()` (UniAD: `models/reconstructions/uniad.py`
lines 56 and 172; DualAD: `models/reconstructions/dualad.py` line 141); it needs `easydict` and `einops`
on PYTHONPATH (Dinomaly's utils.py also imports pandas). RD4AD's test.py imports pandas only for its
AUPRO, which is not run: without pandas an empty module stands in for it. Nothing of the official code is
copied here or committed: it is imported from `--official`.
on PYTHONPATH (Dinomaly's utils.py also imports pandas). Nothing of the official code is copied here or
committed: it is imported from `--official`. ADer (vitad) must be run from a directory other than the
checkout (its package `__init__`s import every file they glob relative to the working directory); the
packages its utilities import but these numbers do not use are stubbed (`ader_imports`).

The official model is filled by the rule in `tests/parity/seeded.py` (key order and shapes alone), the
input is a real image through the official transform, and the fixture (tests/fixtures/parity/<method>.json,
`<method>_<backbone>.json` for a backbone other than the method's first) records the key names with
shapes, the transformed input, the official map, image score, loss and gradient norms, as sums and
samples at fixed positions.

MambaAD's official model file plugs into the ADer framework (its README: copy it into ADer's `model/`): it is
imported from `--official` with ADer's `model`, `loss`, `optim` and `util` packages from `--ader` (ADer's
evaluator module also imports `numba` and `adeval`). Its selective scan is mamba_ssm's CUDA kernel; on the
CPU it is replaced by the same package's pure-PyTorch reference `selective_scan_ref` (mamba-ssm 2.3.2.post1,
`mamba_ssm/ops/selective_scan_interface.py`), imported from the unpacked sdist `--mamba-ssm` (`pip download
--no-deps --no-binary :all: mamba-ssm`; its CUDA build is not needed): the only change to the official code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import importlib.util
import json
import math
import sys
import types
from argparse import Namespace
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.parity.seeded import seeded_state  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"
IMAGE = "bottle/test/broken_large/000.png"
TRAIN_IMAGE = "bottle/train/good/000.png"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
OFFICIAL = {
    "dinomaly": ("guojiajeremy/Dinomaly", "c5c76d01a2bd7212f1c4b7dfdad14902d0f48cfe"),
    "uniad": ("zhiyuanyou/UniAD", "a5b9d9d20c2aae680fa00fe5088616b611e05f3c"),
    "dualad_he": ("cyhaan/DualAD", "04ce68d4e97397950a3c99d024740e93a04df922"),
    "dualad_ho": ("cyhaan/DualAD", "04ce68d4e97397950a3c99d024740e93a04df922"),
    "rd4ad": ("hq-deng/RD4AD", "6554076872c65f8784f6ece8cfb39ce77e1aee12"),
    "vitad": ("zhangzjn/ADer", "902937a7ed7fa7689674a4ac9b8fe9a72a40c402"),
    "mambaad": ("lewandofskee/MambaAD", "0434452576dc92505f843bf4513142eea26c5709"),
    "mambaad_training": ("lewandofskee/MambaAD", "0434452576dc92505f843bf4513142eea26c5709"),
    "inpformer": ("luow23/INP-Former", "17d265381d9b323a2ef6e05aab0665a85edebe84"),
}
# the protocol preset each method names (conf/method/<name>.yaml), recorded with its fixtures
PROTOCOLS = {
    "dinomaly": "dinomaly392",
    "uniad": "uniad224",
    "dualad_he": "dualad224",
    "dualad_ho": "dualad224",
    "rd4ad": "rd4ad256",
    "vitad": "ader256_gauss4",
    "mambaad": "mambaad256",
    "mambaad_training": "mambaad256",
    "inpformer": "inpformer392",
}
# the framework MambaAD's model file plugs into
ADER = ("zhangzjn/ADer", "902937a7ed7fa7689674a4ac9b8fe9a72a40c402")
MAMBAAD_SIZE = 256  # MambaAD's recipe input side
# MambaAD's gradients and optimiser steps are recorded at 128 px: autograd through selective_scan_ref's
# per-step indexing costs time quadratic in the scan length (each step's backward writes a zero tensor the
# size of the whole (d, L, 16) state), measured 104 CPU-s for ONE scan of L = 1,024 over 1,024 channels and
# hours for the 16 scans of a 256 px backward (L up to 4,096); at 128 px the longest scan is L = 1,024.
MAMBAAD_TRAINING_SIZE = 128
# Dinomaly's sizes as dinomaly_mvtec_uni.py sets them per encoder: (DINOv2 constructor, width, heads, taps).
# ViT-L differs in depth (24) and in the tapped blocks; the two fused groups are the same halves.
DINOMALY_SIZES = {
    "dinov2_vits14_reg": ("vit_small", 384, 6, list(range(2, 10))),
    "dinov2_vitb14_reg": ("vit_base", 768, 12, list(range(2, 10))),
    "dinov2_vitl14_reg": ("vit_large", 1024, 16, list(range(4, 20, 2))),
}
BACKBONES = {"dinomaly": tuple(DINOMALY_SIZES), "uniad": ("effb4",), "dualad_he": ("wres50",)}
BACKBONES["dualad_ho"] = BACKBONES["dualad_he"]
BACKBONES["rd4ad"] = ("wres50",)
RD4AD_STEPS = 3  # optimiser steps of main.py's training loop recorded
# RD4AD parameters (and one BatchNorm statistic) recorded after RD4AD_STEPS steps
RD4AD_STEP_KEYS = [
    "bn.conv1.weight",
    "bn.bn_layer.0.conv1.weight",
    "bn.bn_layer.2.bn3.weight",
    "bn.bn_layer.2.bn3.running_mean",
    "decoder.layer1.0.conv2.weight",
    "decoder.layer1.0.upsample.0.weight",
    "decoder.layer3.5.conv3.weight",
]
BACKBONES["vitad"] = ("vits16_dino",)
BACKBONES["mambaad"] = BACKBONES["mambaad_training"] = ("res34",)
BACKBONES["inpformer"] = ("dinov2_vits14_reg",)  # the per-image fixture; parameter counts for all three
INPFORMER_STEPS = 3  # optimiser steps of INP_Former_Multi_Class.py's training loop recorded
# official trainable key whose gradient norm (and change over INPFORMER_STEPS steps) the fixture records
INPFORMER_KEYS = [
    "prototype_token",
    "aggregation.0.attn.q.weight",
    "aggregation.0.attn.kv.weight",
    "aggregation.0.mlp.fc2.weight",
    "bottleneck.0.fc1.weight",
    "decoder.0.attn.learn_scale",
    "decoder.0.attn.kv.weight",
    "decoder.0.attn.proj.weight",
    "decoder.7.norm1.weight",
    "decoder.7.mlp.fc2.weight",
]
# utils.py imports these for its evaluation (adeval's CUDA accumulator, pandas for compute_pro) and aug_funcs
# (kornia, few-shot augmentation); the recorded numbers use none of them
INPFORMER_UNUSED_MODULES = ("adeval", "pandas", "kornia")
SAMPLES = 64  # values recorded per tensor, at evenly spaced flat positions


def summary(tensor: torch.Tensor, samples: int = SAMPLES) -> dict:
    """Shape, sum, sum of squares and `samples` values at fixed flat positions of `tensor`."""
    flat = tensor.detach().double().flatten()
    positions = torch.linspace(0, flat.numel() - 1, samples).long()
    return {
        "shape": list(tensor.shape),
        "sum": flat.sum().item(),
        "sum_sq": flat.pow(2).sum().item(),
        "positions": positions.tolist(),
        "values": flat[positions].tolist(),
    }


def fill(model: torch.nn.Module, prefix: str = "") -> dict:
    """Load the seeded state into `model`; returns what the fixture records to rebuild it: the key -> shape
    table (in the model's order, with the checkpoint's key `prefix`) and the aliases, keys of one shared
    tensor (the last one loaded wins). Integer tensors other than batch-norm counters (MambaAD's scan
    orders) are facts of the model, not weights: they keep their values and stay out of the table."""
    state = model.state_dict()
    shapes = {
        k: list(v.shape)
        for k, v in state.items()
        if v.is_floating_point() or k.endswith("num_batches_tracked")
    }
    model.load_state_dict({**state, **seeded_state(shapes)})
    groups: dict[int, list[str]] = {}
    for key, tensor in state.items():
        groups.setdefault(tensor.data_ptr(), []).append(key)
    aliases = {
        prefix + keys[-1]: [prefix + k for k in keys[:-1]] for keys in groups.values() if len(keys) > 1
    }
    return {"shapes": {prefix + k: v for k, v in shapes.items()}, "aliases": aliases}


def grad_norms(loss: torch.Tensor, model: torch.nn.Module, keys: list[str]) -> dict[str, float]:
    loss.backward()
    params = dict(model.named_parameters())
    return {k: params[k].grad.norm().item() for k in keys}


def dinov2_encoder(dinov2: Any, arch: str) -> torch.nn.Module:
    """The DINOv2-reg ViT `arch` of the checkout's `dinov2.models.vision_transformer` module, as the
    Dinomaly and INP-Former scripts build it before loading its download (their `vit_encoder.load`)."""
    return getattr(dinov2, arch)(
        patch_size=14,
        img_size=518,
        block_chunks=0,
        init_values=1e-8,
        num_register_tokens=4,
        interpolate_antialias=False,
        interpolate_offset=0.1,
    )


def dinomaly_model(backbone: str) -> torch.nn.Module:
    """The official ViTill on a DINOv2-reg ViT (`backbone`: DINOMALY_SIZES), built as dinomaly_mvtec_uni.py
    builds it (the encoder without its download), unfilled; the checkout must be on sys.path."""
    from dinov2.models import vision_transformer as dinov2
    from models.uad import ViTill
    from models.vision_transformer import Block, LinearAttention2, bMlp

    arch, dim, heads, taps = DINOMALY_SIZES[backbone]
    encoder = dinov2_encoder(dinov2, arch)
    bottleneck = torch.nn.ModuleList([bMlp(dim, dim * 4, dim, drop=0.2)])
    norm = partial(torch.nn.LayerNorm, eps=1e-8)
    decoder = torch.nn.ModuleList(
        Block(dim=dim, num_heads=heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm, attn=LinearAttention2)
        for _ in range(8)
    )
    groups = [[0, 1, 2, 3], [4, 5, 6, 7]]
    return ViTill(encoder, bottleneck, decoder, taps, groups, groups, 0)


def dinomaly(official: Path, backbone: str) -> dict:
    """ViTill on a DINOv2-reg ViT as dinomaly_mvtec_uni.py, input 448 -> crop 392."""
    from dataset import get_data_transforms
    from utils import cal_anomaly_maps, get_gaussian_kernel, global_cosine_hm_percent

    model = dinomaly_model(backbone)
    rebuild = fill(model)
    model.eval()
    transform, _ = get_data_transforms(448, 392)
    image = transform(Image.open(REALDATA / IMAGE).convert("RGB"))[None]  # (1, 3, 392, 392)
    en, de = model(image)
    with torch.no_grad():
        raw, _ = cal_anomaly_maps(en, de, image.shape[-1])  # (1, 1, 392, 392)
        smoothed = get_gaussian_kernel(kernel_size=5, sigma=4)(
            F.interpolate(raw, size=256, mode="bilinear", align_corners=False)
        )
        flat = smoothed.flatten(1)
        score = torch.sort(flat, dim=1, descending=True)[0][:, : int(flat.shape[1] * 0.01)].mean()
    loss = global_cosine_hm_percent(en, de, p=0.9, factor=0.1)
    grads = grad_norms(loss, model, ["bottleneck.0.fc1.weight", "decoder.0.attn.qkv.weight"])
    return {
        "config": {"method": "dinomaly", "backbone": backbone, "protocol": PROTOCOLS["dinomaly"]},
        **rebuild,
        "input": summary(image),
        "outputs": {
            "raw_map": summary(raw),
            "eval_map": summary(smoothed),
            "image_score": score.item(),
            "loss_step_1000": loss.item(),
            "grad_norms": grads,
        },
    }


def official_config(official: Path, **reconstruction) -> Any:
    """The official MVTec config (experiments/MVTec-AD/config.yaml, an EasyDict) with `pretrained: False`
    (the weights come from the seeded rule), the reconstruction's kwargs updated by `reconstruction` (a None
    value removes the key) and the official `update_config` applied."""
    import yaml
    from easydict import EasyDict
    from utils.misc_helper import update_config

    config = EasyDict(yaml.safe_load((official / "experiments" / "MVTec-AD" / "config.yaml").read_text()))
    config.net[0].kwargs.pretrained = False
    kwargs = next(n for n in config.net if n.name == "reconstruction").kwargs
    for key, value in reconstruction.items():
        if value is None:
            kwargs.pop(key)
        else:
            kwargs[key] = value
    return update_config(config)


def helper_model(config: Any) -> torch.nn.Module:
    """The official ModelHelper of `config.net`, on the CPU."""
    from models.model_helper import ModelHelper

    model = ModelHelper(config.net)
    model.device = torch.device("cpu")
    return model


def _cv2_input(resize: str) -> torch.Tensor:
    """UniAD: cv2 read, RGB, PIL Resize((224, 224)) bilinear; DualAD: cv2.resize to (224, 224)."""
    import cv2
    import torchvision.transforms as T

    rgb = cv2.cvtColor(cv2.imread(str(REALDATA / IMAGE), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if resize == "pil":
        image = T.Resize([224, 224], T.InterpolationMode.BILINEAR)(Image.fromarray(rgb, "RGB"))
    else:
        image = Image.fromarray(cv2.resize(rgb, (224, 224)), "RGB")
    return T.Normalize(MEAN, STD)(T.ToTensor()(image))[None]  # (1, 3, 224, 224)


def _max_avgpool(pred: torch.Tensor) -> float:
    return F.avg_pool2d(pred, (16, 16), stride=1).flatten(1).max(dim=1)[0].item()


def uniad(official: Path, backbone: str) -> dict:
    """UniAD with its MVTec config: EfficientNet-B4 (lukemelas) blocks 1/5/9/21, MFCN, 4+4 layers, 224."""
    model = helper_model(official_config(official))
    model.reconstruction.save_recon = None
    rebuild = fill(model, prefix="module.")  # the DDP prefix UniAD's train_val.py saves
    model.eval()
    image = _cv2_input("pil")
    out = model({"image": image})
    loss = F.mse_loss(out["feature_rec"], out["feature_align"])
    grads = grad_norms(loss, model, ["reconstruction.input_proj.weight", "reconstruction.output_proj.weight"])
    return {
        "config": {"method": "uniad", "backbone": "effb4", "protocol": PROTOCOLS["uniad"]},
        **rebuild,
        "input": summary(image),
        "outputs": {
            "aligned": summary(out["feature_align"]),
            "reconstruction": summary(out["feature_rec"]),
            "eval_map": summary(out["pred"]),
            "image_score": _max_avgpool(out["pred"].detach()),
            "loss": loss.item(),
            "grad_norms": {k.replace("reconstruction.", ""): v for k, v in grads.items()},
        },
        # the official features in full, so the reconstruction is tested apart from the backbone
        "arrays": {"aligned": out["feature_align"].detach()[0].numpy()},
    }


def _dualad(official: Path, method: str, grad_keys: list[str], **reconstruction) -> dict:
    """DualAD with its MVTec config (WideResNet-50 layer1-3, MFAA, NDN 4+4, 224), the WSN as `reconstruction`
    sets it."""
    model = helper_model(official_config(official, **reconstruction))
    rebuild = fill(model)  # DualAD saves without the DDP prefix
    model.eval()
    image = _cv2_input("cv2")
    out = model({"image": image})
    levels = out["outplanes"]
    loss = sum(
        F.mse_loss(r, a)
        for r, a in zip(out["feature_rec"].split(levels, 1), out["feature_align"].split(levels, 1))
    )
    grads = grad_norms(loss, model, grad_keys)
    return {
        "config": {"method": method, "backbone": "wres50", "protocol": PROTOCOLS[method]},
        **rebuild,
        "input": summary(image),
        "outputs": {
            "aligned": summary(out["feature_align"]),
            "reconstruction": summary(out["feature_rec"]),
            "eval_map": summary(out["pred_pixel"]),
            "image_score": out["pred_image"].item(),
            "loss": loss.item(),
            "grad_norms": grads,
        },
    }


def dualad_he(official: Path, backbone: str) -> dict:
    """DualAD-He, the released config: MLP WSN + memories."""
    return _dualad(
        official, "dualad_he", ["reconstruction.in_proj.0.weight", "reconstruction.out_proj.2.weight"]
    )


def dualad_ho(official: Path, backbone: str) -> dict:
    """DualAD-Ho: no config is released; the released He config with a transformer WSN of 2 + 2 layers and
    no memory, the settings that reproduce the paper's Ho parameter counts (conf/method/dualad_ho.yaml)."""
    grad_keys = [
        "reconstruction.in_proj.weight",
        "reconstruction.proj_decoder.learned_queries.0.weight",
        "reconstruction.out_proj.weight",
    ]
    return _dualad(
        official,
        "dualad_ho",
        grad_keys,
        proj_type="transformer",
        num_in_proj_layers=2,
        num_out_proj_layers=2,
        memory_module=None,
    )


def _import_rd4ad_test() -> Any:
    """The official test.py, with an empty `pandas` while it is imported when pandas is missing: test.py
    uses pandas only in its AUPRO, which is not run (the stand-in leaves sys.modules again, as libraries
    that look for pandas there, sklearn's, would take it for the real one)."""
    import importlib
    import types

    try:
        import pandas  # noqa: F401
    except ImportError:
        sys.modules["pandas"] = types.ModuleType("pandas")
        try:
            return importlib.import_module("test")
        finally:
            del sys.modules["pandas"]
    return importlib.import_module("test")


class Rd4adOfficial(torch.nn.Module):
    """The official encoder, bn (OCBE) and decoder as one module, so the seeded rule fills all three and
    the key names carry the checkpoint's `bn.` / `decoder.` prefixes."""

    def __init__(self) -> None:
        super().__init__()
        from de_resnet import de_wide_resnet50_2
        from resnet import wide_resnet50_2

        self.encoder, self.bn = wide_resnet50_2(pretrained=False)
        self.decoder = de_wide_resnet50_2(pretrained=False)


def rd4ad(official: Path, backbone: str) -> dict:
    """RD4AD as main.py and test.py: WideResNet-50 layers 1-3, BN_layer, de_wide_resnet50_2, 256 px; the
    map, score and loss in eval mode, then RD4AD_STEPS steps of main.py's loop (Adam lr 0.005, betas
    (0.5, 0.999), bn and decoder in train mode) on the same image, in float64: Adam moves every weight by
    about lr whatever its gradient's size, so in float32 the rounding of near-zero gradients decides the
    direction of many updates (float32 and float64 runs of one implementation differ by up to 6 lr after
    three steps); in float64 what is compared is the arithmetic, not the rounding."""
    from dataset import get_data_transforms
    from scipy.ndimage import gaussian_filter

    cal_anomaly_map = _import_rd4ad_test().cal_anomaly_map  # before main.py, which imports test.py
    from main import loss_fucntion

    model = Rd4adOfficial()
    rebuild = fill(model)
    trainable = [*model.decoder.parameters(), *model.bn.parameters()]
    model.eval()
    transform, _ = get_data_transforms(256, 256)
    image = transform(Image.open(REALDATA / IMAGE).convert("RGB"))[None]  # (1, 3, 256, 256)
    inputs = model.encoder(image)
    outputs = model.decoder(model.bn(inputs))
    with torch.no_grad():
        raw, _ = cal_anomaly_map(inputs, outputs, image.shape[-1], amap_mode="a")  # (256, 256) float64
        smoothed = gaussian_filter(raw, sigma=4)
    loss = loss_fucntion(inputs, outputs)
    features, reconstruction = [summary(f) for f in inputs], [summary(o) for o in outputs]
    grads = grad_norms(
        loss, model, ["bn.bn_layer.0.conv1.weight", "bn.conv1.weight", "decoder.layer3.5.conv3.weight"]
    )
    model.double()
    image = image.double()
    optimizer = torch.optim.Adam(trainable, lr=0.005, betas=(0.5, 0.999))
    model.bn.train()
    model.decoder.train()
    losses = []
    for _ in range(RD4AD_STEPS):
        teacher = model.encoder(image)
        step_loss = loss_fucntion(teacher, model.decoder(model.bn(teacher)))
        optimizer.zero_grad()
        step_loss.backward()
        optimizer.step()
        losses.append(step_loss.item())
    state = model.state_dict()
    return {
        "config": {"method": "rd4ad", "backbone": "wres50", "protocol": PROTOCOLS["rd4ad"]},
        **rebuild,
        "input": summary(image),
        "trainable_params": sum(p.numel() for p in trainable),
        "outputs": {
            "features": features,
            "reconstruction": reconstruction,
            "raw_map": summary(torch.from_numpy(raw)[None, None]),
            "eval_map": summary(torch.from_numpy(smoothed)[None, None]),
            "image_score": float(np.max(smoothed)),
            "loss": loss.item(),
            "grad_norms": grads,
        },
        "training": {
            "optimizer": "Adam lr 0.005 betas (0.5, 0.999), bn and decoder in train mode, float64",
            "losses": losses,
            "after": {key: summary(state[key]) for key in RD4AD_STEP_KEYS},
        },
    }


# ADer's modules import these at the top but the numbers recorded here never use them (TensorBoard writer, the
# GPU metric accumulator, numba's jit of unused functions, the accimage and augmentation libraries).
ADER_UNUSED_MODULES = ("tensorboardX", "numba", "adeval", "accimage", "imgaug", "imgaug.augmenters")
ADER_RECIPE = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4, "clip_grad": 5.0}
VITAD_GRAD_KEYS = [
    "net_fusion.fc.weight",
    "net_s.pos_embed",
    "net_s.blocks.0.attn.qkv.weight",
    "net_s.blocks.8.mlp.fc2.weight",
]


class _Unused(types.ModuleType):
    """A module the official code imports but the recorded numbers never use: any name is a no-op."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: lambda f: f


def stub_modules(names: tuple[str, ...]) -> None:
    """An empty stand-in for each module of `names` (installed or not), unless it is already imported."""
    for name in names:
        module = _Unused(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # what importlib.util.find_spec reads
        sys.modules.setdefault(name, module)


@contextlib.contextmanager
def stubbed_modules(names: tuple[str, ...]) -> Iterator[None]:
    """`stub_modules(names)` while the official modules are imported, then the stand-ins removed again
    (the importing module keeps its reference): other libraries look a module up in sys.modules (sklearn
    asks whether pandas is there, and would take the stand-in for it)."""
    added = [name for name in names if name not in sys.modules]
    stub_modules(names)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def ader_imports() -> None:
    """Empty stand-ins for ADER_UNUSED_MODULES, placeholders for the timm optimisers ADer's `optim` imports
    by names the installed timm no longer has (ADer's recipes use torch's AdamW), `collections.Iterable`
    (Python < 3.10) for its util/net.py, and Pillow < 10's reading of a float zero mask."""
    import collections
    import collections.abc
    import importlib

    collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]
    from_array = Image.fromarray

    def zero_mask_as_old_pillow(array: Any, mode: str | None = None) -> Image.Image:
        """DefaultAD builds a good image's mask as `fromarray(np.zeros(..), mode='L')` (float64), which
        Pillow < 10 read as the all-zero 8-bit image and Pillow >= 10 refuses: give it that image."""
        if mode == "L" and isinstance(array, np.ndarray) and array.dtype != np.uint8 and not array.any():
            return from_array(np.zeros(array.shape, np.uint8), mode="L")
        return from_array(array, mode=mode) if mode else from_array(array)

    Image.fromarray = zero_mask_as_old_pillow
    import torchvision.transforms.functional  # noqa: F401  (before accimage is stubbed: it checks for it)

    stub_modules(ADER_UNUSED_MODULES)
    for module, name in (("timm.optim.nadam", "Nadam"), ("timm.optim.radam", "RAdam")):
        module = importlib.import_module(module)
        if not hasattr(module, name):
            setattr(module, name, None)


def vitad_model(size: int = 256) -> torch.nn.Module:
    """ADer's ViTAD as configs/benchmark/vitad/vitad_256_100e.py builds it (teacher without its download),
    through ADer's own `get_model`; unfilled."""
    from argparse import Namespace

    import model.vitad  # noqa: F401  (registers the ViTAD parts)
    from model import get_model

    def part(name: str, **kwargs: Any) -> Namespace:
        return Namespace(name=name, kwargs={"pretrained": False, "checkpoint_path": "", **kwargs})

    teacher = part(
        "vit_small_patch16_224_dino",
        pretrained_cfg={},
        pretrained_strict=False,
        strict=True,
        img_size=size,
        teachers=[3, 6, 9],
        neck=[12],
    )
    fusion = part("fusion", strict=False, dim=384, mul=1)
    student = part("de_vit_small_patch16_224_dino", strict=False, img_size=size, students=[3, 6, 9], depth=9)
    return get_model(part("vitad", strict=True, model_t=teacher, model_f=fusion, model_s=student))


def ader_input(size: int = 256) -> torch.Tensor:
    """The test image through ADer's `get_transforms` with the recipe's test_transforms: PIL RGB, Resize
    (size, size) bilinear, CenterCrop, ToTensor, Normalize (ImageNet)."""
    import data.transforms  # noqa: F401  (registers the transforms)
    import torchvision.transforms.functional as TF
    from data.utils import get_transforms

    steps = [
        {"type": "Resize", "size": (size, size), "interpolation": TF.InterpolationMode.BILINEAR},
        {"type": "CenterCrop", "size": (size, size)},
        {"type": "ToTensor"},
        {"type": "Normalize", "mean": MEAN, "std": STD, "inplace": True},
    ]
    transform = get_transforms(None, train=False, cfg_transforms=steps)
    return transform(Image.open(REALDATA / IMAGE).convert("RGB"))[None]  # (1, 3, size, size)


def vitad(official: Path, backbone: str) -> dict:
    """ViTAD on DINO ViT-S/16 at 256 as ADer's benchmark recipe: map and loss by ViTADTrainer's calls
    (Evaluator.cal_anomaly_map with gaussian_sigma=4, CosLoss avg=False), the image score as
    Evaluator.run pools it (pooling_ks [16, 16]); then 3 training steps of the recipe (get_optim adamw
    with add_weight_decay groups, clip_grad 5.0 by dispatch_clip_grad, the step schedule's first rate) on
    the same image, recording each parameter's change."""
    ader_imports()
    from loss.base_loss import CosLoss
    from optim import get_optim
    from timm.utils import dispatch_clip_grad  # what trainer/_base_trainer.py imports and calls
    from util.metric import Evaluator

    model = vitad_model()
    rebuild = fill(model)
    model.train()  # the teacher stays in eval mode (ViTAD.train)
    image = ader_input()
    with torch.no_grad():
        neck = model.net_t(image)[1][0]  # (1, 256, 384) patch tokens after block 12
    feats_t, feats_s = model(image)
    loss_fn = CosLoss(avg=False, lam=1.0)
    loss = loss_fn(feats_t, feats_s)
    amap, _ = Evaluator.cal_anomaly_map(
        [f.detach() for f in feats_t],
        [f.detach() for f in feats_s],
        [256, 256],
        uni_am=False,
        amap_mode="add",
        gaussian_sigma=4,
    )  # (1, 256, 256) float64
    pooled = F.avg_pool2d(torch.tensor(amap).unsqueeze(1), [16, 16], stride=1).numpy().squeeze(1)
    score = float(pooled.max(axis=(1, 2))[0])
    grads = grad_norms(loss, model, VITAD_GRAD_KEYS)
    trainable = [p for p in model.parameters() if p.requires_grad]
    receiving = sum(p.numel() for p in trainable if p.grad is not None)

    recipe = ADER_RECIPE
    optim_kwargs = {"name": "adamw", "betas": recipe["betas"], "eps": recipe["eps"]}
    optim_kwargs |= {"weight_decay": recipe["weight_decay"], "amsgrad": False}
    optimizer = get_optim(optim_kwargs, model, lr=recipe["lr"])
    before = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    step_losses = []
    for _ in range(3):  # ViTADTrainer.optimize_parameters + BaseTrainer.backward_term
        optimizer.zero_grad()
        step_loss = loss_fn(*model(image))
        step_loss.backward()
        dispatch_clip_grad(model.parameters(), value=recipe["clip_grad"])
        optimizer.step()
        step_losses.append(step_loss.item())
    params = dict(model.named_parameters())
    deltas = {k: summary(params[k].detach() - before[k]) for k in VITAD_GRAD_KEYS}
    return {
        "config": {"method": "vitad", "backbone": backbone, "protocol": PROTOCOLS["vitad"]},
        **rebuild,
        "input": summary(image),
        "outputs": {
            "neck": summary(neck),
            "teachers": [summary(f) for f in feats_t],
            "students": [summary(f.detach()) for f in feats_s],
            "eval_map": summary(torch.from_numpy(amap)[:, None]),
            "image_score": score,
            "loss": loss.item(),
            "grad_norms": grads,
        },
        "parameters": {"trainable": sum(p.numel() for p in trainable), "with_gradient": receiving},
        "training": {
            "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()},
            "losses": step_losses,
            "deltas": deltas,
        },
    }


def _reference_scan(mamba_ssm: Path | None) -> None:
    """Make mamba_ssm's `selective_scan_fn` its pure-PyTorch `selective_scan_ref` (per channel group, under
    activation checkpointing: `_scan_per_group`), before the official model file imports it. Without an
    installed package, the package's modules are read from the sdist at `mamba_ssm` without running its
    __init__ (which imports the language models) and with an empty stand-in for the compiled
    `selective_scan_cuda`, which the reference never calls."""
    try:
        import mamba_ssm.ops.selective_scan_interface as interface
    except ImportError:
        if mamba_ssm is None:
            raise SystemExit(
                "mamba_ssm is not importable: pass --mamba-ssm /path/to/unpacked/sdist"
            ) from None
        package = types.ModuleType("mamba_ssm")
        package.__path__ = [str(mamba_ssm / "mamba_ssm")]
        sys.modules["mamba_ssm"] = package
        sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
        import mamba_ssm.ops.selective_scan_interface as interface
    interface.selective_scan_fn = partial(_scan_per_group, interface.selective_scan_ref)


def _scan_per_group(
    reference: Any,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor:
    """`reference` (selective_scan_ref) called once per group of channels that share B and C (SS2D: one per
    scan direction) and concatenated: the scan treats every channel on its own, so the outputs and gradients
    are the same (checked bit-equal at L = 64, 256 channels, 8 groups), but autograd through the reference's
    per-step indexing writes a zero tensor of the call's whole (d, L, 16) state per step, which fits the
    cache for one group and not for eight (L = 1,024, 1,024 channels: 17 CPU-s for fwd + bwd instead of
    104). Each call is recomputed in the backward pass (activation checkpointing): its L-step autograd graph
    would hold ~1 GB per call, more than a shared CPU machine has."""
    assert z is None and not return_last_state and B.dim() == 4 and C.dim() == 4  # what SS2D passes
    groups = B.shape[1]
    width = u.shape[1] // groups
    parts = []
    for g in range(groups):
        ch = slice(g * width, (g + 1) * width)
        args = (u[:, ch], delta[:, ch], A[ch], B[:, g : g + 1], C[:, g : g + 1], None if D is None else D[ch])
        bias = None if delta_bias is None else delta_bias[ch]
        parts.append(
            torch.utils.checkpoint.checkpoint(
                reference, *args, delta_bias=bias, delta_softplus=delta_softplus, use_reentrant=False
            )
        )
    return torch.cat(parts, dim=1)


def mambaad_model(
    official: Path, ader: Path, mamba_ssm: Path | None, size: int = MAMBAAD_SIZE
) -> torch.nn.Module:
    """The official MAMBAAD as configs/mambaad/mambaad_mvtec.py builds it (timm ResNet-34 layers 1-3, decoder
    depths [3, 4, 6, 3], Hilbert scans in 8 directions), unfilled, with the reference selective scan, for
    `size` px inputs. MambaUPNet builds each block's scan table (HSCANS) for a 256 px input (`size=8 * 2 **
    i_layer`); at another size every table is rebuilt by the official HSCANS for the side its block sees."""
    _reference_scan(mamba_ssm)
    sys.path.insert(0, str(ader))
    # ADer's registry of timm models (`model` globs model/*.py in the cwd: none here)
    import model.ad_factory

    spec = importlib.util.spec_from_file_location("model.mambaad", official / "model" / "mambaad.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model_t = Namespace(
        name="timm_resnet34",
        kwargs=dict(
            pretrained=False, checkpoint_path=None, strict=False, features_only=True, out_indices=[1, 2, 3]
        ),
    )
    model = module.MAMBAAD(model_t, dict(depths_decoder=[3, 4, 6, 3], scan_type="hilbert", num_direction=8))
    model.scan_class = module.HSCANS
    if size != MAMBAAD_SIZE:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, module.HSCANS):
                    side = math.isqrt(child.index_flat.numel()) * size // MAMBAAD_SIZE
                    setattr(parent, name, module.HSCANS(size=side, scan_type="hilbert"))
    return model


def _ader_optim_names() -> None:
    """ADer's optim module imports `Nadam` and `RAdam`, which timm 1.0 renamed; its AdamW recipe uses
    neither, so they are set to None where missing."""
    for name, cls in [("nadam", "Nadam"), ("radam", "RAdam")]:
        module = importlib.import_module(f"timm.optim.{name}")
        setattr(module, cls, getattr(module, cls, None))


def _ader_input(names: list[str], size: int = MAMBAAD_SIZE) -> torch.Tensor:
    """ADer's test transform of configs/benchmark/mambaad/mambaad_256_100e.py on PIL RGB images: torchvision
    Resize((size, size)) bilinear, CenterCrop(size), ToTensor, Normalize(ImageNet); the recipe's size 256."""
    import torchvision.transforms as T

    transform = T.Compose(
        [
            T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop((size, size)),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    return torch.stack([transform(Image.open(REALDATA / name).convert("RGB")) for name in names])


def scan_indices(model: torch.nn.Module, rebuild: dict) -> dict:
    """MambaAD's scan tables (the integer tensors `fill` leaves out of the shapes): their keys, and each
    table's values by the map size it is for (every block of a stage holds the same ones)."""
    state = model.state_dict()
    keys = [k for k in state if k not in rebuild["shapes"]]
    by_length: dict[str, dict] = {str(state[k].numel()): {} for k in keys}
    for key in keys:
        by_length[str(state[key].numel())][key.rsplit(".", 1)[1]] = state[key].flatten().tolist()
    return {"keys": keys, "by_length": by_length}


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {k: p for k, p in model.named_parameters() if p.requires_grad and not k.startswith("net_t.")}


def mambaad(official: Path, backbone: str, ader: Path, mamba_ssm: Path | None) -> dict:
    """MambaAD with the official MVTec model at 256 px, one image in eval mode, no gradients: features,
    one-class embedding, reconstruction, ADer's anomaly map (mean of per-level 1 - cos, Gaussian sigma 4) and
    image score (its max), the L2Loss x 5, the parameter counts, the scan orders. Gradients: mambaad_training
    (128 px, see MAMBAAD_TRAINING_SIZE)."""
    model = mambaad_model(official, ader, mamba_ssm)  # puts ADer on sys.path
    from loss.base_loss import L2Loss
    from util.metric import Evaluator

    rebuild = fill(model)
    state = model.state_dict()
    indices = scan_indices(model, rebuild)
    # every scan order of the official HSCANS at two sizes: sequence step -> row-major map position
    orders = {
        scan: {side: model.scan_class(side, scan_type=scan).index_flat.flatten().tolist() for side in (4, 8)}
        for scan in ("sweep", "scan", "zorder", "zigzag", "hilbert")
    }
    trainable = _trainable(model)
    counts = {
        "trainable": sum(p.numel() for p in trainable.values()),
        "frozen_encoder": sum(p.numel() for k, p in model.named_parameters() if k.startswith("net_t.")),
        "scan_indices": sum(state[k].numel() for k in indices["keys"]),
    }
    embedded = {}
    model.mff_oce.register_forward_hook(lambda m, i, o: embedded.setdefault("embedding", o.detach()))

    model.eval()
    image = _ader_input([IMAGE])  # (1, 3, 256, 256)
    with torch.no_grad():
        feats_t, feats_s = model(image)
        loss = L2Loss(lam=5.0)(feats_t, feats_s)
        raw, _ = Evaluator.cal_anomaly_map(feats_t, feats_s, [256, 256], uni_am=False, amap_mode="add")
        smoothed, _ = Evaluator.cal_anomaly_map(
            feats_t, feats_s, [256, 256], uni_am=False, amap_mode="add", gaussian_sigma=4
        )
    outputs = {
        "levels": [summary(f) for f in feats_t],
        "embedding": summary(embedded["embedding"]),
        "decoded": [summary(f) for f in feats_s],
        "raw_map": summary(torch.from_numpy(raw)),
        "eval_map": summary(torch.from_numpy(smoothed)),
        "image_score": float(smoothed.max(axis=(1, 2))[0]),
        "loss": loss.item(),
    }

    return {
        "config": {"method": "mambaad", "backbone": "res34", "protocol": PROTOCOLS["mambaad"]},
        "ader": {"repo": ADER[0], "commit": ADER[1]},
        "image_size": MAMBAAD_SIZE,
        **rebuild,
        "scan_indices": indices,
        "scan_orders": orders,
        "parameter_counts": counts,
        "input": summary(image),
        "outputs": outputs,
    }


def mambaad_training(official: Path, backbone: str, ader: Path, mamba_ssm: Path | None) -> dict:
    """Three steps of the ADer recipe (AdamW lr 0.005, weight decay 1e-4 but not on 1-D tensors and biases,
    gradient norm clipped at 5) on the seeded official MambaAD, in train mode on one training image at 128 px
    (MAMBAAD_TRAINING_SIZE says why) with the drop-path rate set to 0 (stochastic depth draws random numbers
    that no other program can replay): the first step's loss gradient norm of every trainable tensor (before
    clipping), the losses, and the parameters after the first step and after the third. Its own fixture, so
    that it can be made beside `mambaad`."""
    size = MAMBAAD_TRAINING_SIZE
    model = mambaad_model(official, ader, mamba_ssm, size)
    _ader_optim_names()
    from loss.base_loss import L2Loss
    from optim import get_optim
    from timm.layers import DropPath
    from timm.utils import dispatch_clip_grad

    fill(model)
    for m in model.modules():
        if isinstance(m, DropPath):
            m.drop_prob = 0.0
    model.train()
    optimizer = get_optim(
        dict(name="adamw", betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, amsgrad=False), model, lr=0.005
    )
    criterion = L2Loss(lam=5.0)
    batch = _ader_input([TRAIN_IMAGE], size)
    trainable = _trainable(model)
    losses, grads, first = [], {}, {}
    for _ in range(3):
        optimizer.zero_grad()
        feats_t, feats_s = model(batch)
        step_loss = criterion(feats_t, feats_s)
        step_loss.backward()
        grads = grads or {k: p.grad.norm().item() for k, p in trainable.items()}
        dispatch_clip_grad(model.parameters(), value=5.0)
        optimizer.step()
        first = first or {k: summary(p, samples=8) for k, p in trainable.items()}
        losses.append(step_loss.item())
        print(f"step {len(losses)}: loss {losses[-1]:.6g}", flush=True)
    return {
        "config": {"method": "mambaad", "backbone": "res34", "protocol": PROTOCOLS["mambaad"]},
        "ader": {"repo": ADER[0], "commit": ADER[1]},
        "image_size": size,
        "images": [TRAIN_IMAGE],
        "input": summary(batch),
        "losses": losses,
        "grad_norms": grads,
        "parameters_after_first_step": first,
        "parameters": {k: summary(p, samples=8) for k, p in trainable.items()},
    }


def inpformer_model(backbone: str, num_prototypes: int = 6) -> tuple[torch.nn.Module, torch.nn.ModuleList]:
    """(official INP_Former, its trainable ModuleList) as INP_Former_Multi_Class.py builds them on a
    DINOv2-reg ViT (DINOMALY_SIZES: the same encoder, widths, heads and taps), the encoder without its
    download, the script's init of the trainable parts applied; the checkout must be on sys.path."""
    from dinov2.models import vision_transformer as dinov2
    from models.uad import INP_Former
    from models.vision_transformer import Aggregation_Block, Mlp, Prototype_Block
    from torch.nn.init import trunc_normal_

    arch, dim, heads, taps = DINOMALY_SIZES[backbone]
    encoder = dinov2_encoder(dinov2, arch)
    nn = torch.nn
    norm = partial(nn.LayerNorm, eps=1e-8)
    bottleneck = nn.ModuleList([Mlp(dim, dim * 4, dim, drop=0.0)])
    inp = nn.ParameterList([nn.Parameter(torch.randn(num_prototypes, dim))])
    extractor = nn.ModuleList(
        [Aggregation_Block(dim=dim, num_heads=heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm)]
    )
    decoder = nn.ModuleList(
        Prototype_Block(dim=dim, num_heads=heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm)
        for _ in range(8)
    )
    groups = [[0, 1, 2, 3], [4, 5, 6, 7]]
    model = INP_Former(
        encoder=encoder,
        bottleneck=bottleneck,
        aggregation=extractor,
        decoder=decoder,
        target_layers=taps,
        remove_class_token=True,
        fuse_layer_encoder=groups,
        fuse_layer_decoder=groups,
        prototype_token=inp,
    )
    trainable = nn.ModuleList([bottleneck, decoder, extractor, inp])
    for m in trainable.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.01, a=-0.03, b=0.03)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)
    return model, trainable


def inpformer_eval_map(en: list, de: list, side: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(raw map at `side`, evaluation map, image score) as utils.py evaluation_batch computes them with
    max_ratio=0.01, resize_mask=256."""
    from utils import cal_anomaly_maps, get_gaussian_kernel

    with torch.no_grad():
        raw, _ = cal_anomaly_maps(en, de, side)  # (1, 1, side, side)
        smoothed = get_gaussian_kernel(kernel_size=5, sigma=4)(
            F.interpolate(raw, size=256, mode="bilinear", align_corners=False)
        )
        flat = smoothed.flatten(1)
        score = torch.sort(flat, dim=1, descending=True)[0][:, : int(flat.shape[1] * 0.01)].mean()
    return raw, smoothed, score.item()


def inpformer(official: Path, backbone: str) -> dict:
    """INP-Former on a seeded DINOv2-reg ViT as INP_Former_Multi_Class.py, input 448 -> crop 392: the taps,
    prototypes, fused groups (reconstruction), map, image score, the soft-mining and coherence losses and
    the gradient norms of the training objective (loss + 0.2 x coherence) on one test image; then
    INPFORMER_STEPS steps of the script's loop (StableAdamW, WarmCosineScheduler, clip 0.1) on one training
    image, recording the losses and each INPFORMER_KEYS tensor's change; and the trainable parameter count of
    the official model at ViT-S, B and L (built unfilled: counting needs no weights)."""
    with stubbed_modules(INPFORMER_UNUSED_MODULES):
        from dataset import get_data_transforms
        from optimizers import StableAdamW
        from utils import WarmCosineScheduler, global_cosine_hm_adaptive

    counts = {}
    for size in DINOMALY_SIZES:
        _, trainable = inpformer_model(size)
        counts[size] = sum(p.numel() for p in trainable.parameters())
    model, trainable = inpformer_model(backbone)
    rebuild = fill(model)
    model.eval()
    transform, _ = get_data_transforms(448, 392)
    image = transform(Image.open(REALDATA / IMAGE).convert("RGB"))[None]  # (1, 3, 392, 392)
    taps, prototypes = [], []
    hooks = [
        model.encoder.blocks[i].register_forward_hook(lambda m, i, o: taps.append(o.detach()))
        for i in model.target_layers
    ]
    hooks.append(model.aggregation[0].register_forward_hook(lambda m, i, o: prototypes.append(o.detach())))
    en, de, coherence = model(image)
    for hook in hooks:  # the taps and prototypes of this forward pass only
        hook.remove()
    raw, smoothed, score = inpformer_eval_map([e.detach() for e in en], [d.detach() for d in de], 392)
    mining = global_cosine_hm_adaptive(en, de, y=3)
    loss = mining + 0.2 * coherence
    outputs = {
        "taps": [summary(t) for t in taps],
        "prototypes": summary(prototypes[0]),
        "encoder_groups": [summary(e.detach()) for e in en],
        "reconstruction": [summary(d.detach()) for d in de],
        "raw_map": summary(raw),
        "eval_map": summary(smoothed),
        "image_score": score,
        "soft_mining_loss": mining.item(),
        "coherence_loss": coherence.item(),
        "loss": loss.item(),
        "grad_norms": grad_norms(loss, model, INPFORMER_KEYS),
    }

    optimizer = StableAdamW(
        [{"params": trainable.parameters()}],
        lr=1e-3,
        betas=(0.9, 0.999),
        weight_decay=1e-4,
        amsgrad=True,
        eps=1e-10,
    )
    total = 1000  # the schedule's length (epochs x batches); its first steps are the warm-up's
    scheduler = WarmCosineScheduler(
        optimizer, base_value=1e-3, final_value=1e-4, total_iters=total, warmup_iters=100
    )
    params = dict(model.named_parameters())
    before = {k: params[k].detach().clone() for k in INPFORMER_KEYS}
    train_image = transform(Image.open(REALDATA / TRAIN_IMAGE).convert("RGB"))[None]
    model.train()
    losses, rates = [], []
    for _ in range(INPFORMER_STEPS):  # the script's training loop, one image per batch
        step_en, step_de, step_coherence = model(train_image)
        step_loss = global_cosine_hm_adaptive(step_en, step_de, y=3) + 0.2 * step_coherence
        optimizer.zero_grad()
        step_loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable.parameters(), max_norm=0.1)
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        losses.append(step_loss.item())
        scheduler.step()
    return {
        "config": {"method": "inpformer", "backbone": backbone, "protocol": PROTOCOLS["inpformer"]},
        **rebuild,
        "input": summary(image),
        "parameters": {"trainable": counts},
        "outputs": outputs,
        "training": {
            "image": TRAIN_IMAGE,
            "schedule_steps": total,
            "lr": rates,
            "losses": losses,
            "deltas": {k: summary(params[k].detach() - before[k]) for k in INPFORMER_KEYS},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(OFFICIAL), required=True)
    parser.add_argument("--backbone", help="default: the method's first in BACKBONES")
    parser.add_argument("--official", type=Path, required=True, help="checkout of the official repository")
    parser.add_argument("--ader", type=Path, help="MambaAD: checkout of the ADer framework (ADER)")
    parser.add_argument("--mamba-ssm", type=Path, help="MambaAD: unpacked mamba-ssm sdist, if not installed")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "parity")
    args = parser.parse_args()
    sys.path.insert(0, str(args.official.resolve()))
    torch.manual_seed(0)
    np.random.seed(0)
    backbone = args.backbone or BACKBONES[args.method][0]
    if backbone not in BACKBONES[args.method]:
        parser.error(f"--backbone for {args.method}: one of {BACKBONES[args.method]}")
    name = args.method if backbone == BACKBONES[args.method][0] else f"{args.method}_{backbone}"
    extra = (
        {"ader": args.ader.resolve(), "mamba_ssm": args.mamba_ssm}
        if args.method.startswith("mambaad")
        else {}
    )
    record = globals()[args.method](args.official.resolve(), backbone, **extra)
    repo, commit = OFFICIAL[args.method]
    record = {
        "method": args.method,
        "official": {"repo": repo, "commit": commit, "command": " ".join(["python", *sys.argv])},
        "image": IMAGE,
        **record,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for key, array in record.pop("arrays", {}).items():
        np.save(args.out / f"{name}_{key}.npy", array.astype(np.float32))
    path = args.out / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
    label, value = (
        ("image score", record["outputs"]["image_score"])
        if "outputs" in record
        else ("loss", record["losses"][-1])
    )
    print(f"{path}: {path.stat().st_size / 1e3:.0f} kB, {label} {value:.6g}")
    assert math.isfinite(value)


if __name__ == "__main__":
    main()
