"""Each protocol preset's input pipeline gives the image tensor, mask and label of the official pipeline.

The official steps are written out here from each repository's data code (listed in `uad.data.transforms`)
with the libraries it calls: torchvision transforms on PIL images, cv2 reading and resizing. The data is a
textured image of odd size (RGB and grayscale) and masks with soft edges, isolated pixels of several grey
levels and a lone pixel that a nearest-neighbour resize to 224 may drop, saved as grey, colour, RGBA,
palette and 16-bit files (each official loader decodes those its own way: `uad.data.masks`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from tests.conftest import compose_config
from uad.builders import build_datamodule, build_protocol
from uad.data.transforms import InputTransform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
HEIGHT, WIDTH = 483, 517  # odd, non-square: every resize shrinks or stretches unevenly
DOT = (241, 300)  # (row, col) of the lone pixel: PIL's nearest pick to 224 skips source column 300
BILINEAR, NEAREST = T.InterpolationMode.BILINEAR, T.InterpolationMode.NEAREST


def texture(seed: int) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) uint8: gratings of several frequencies plus noise, so that resize filters differ."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    channels = [
        128 + 50 * np.sin(cols / (1.3 + c)) + 40 * np.cos(rows / (2 + 2 * c)) + rng.normal(0, 18, rows.shape)
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def soft_mask() -> np.ndarray:
    """(HEIGHT, WIDTH) uint8: a disc with a core of 255 and a ramp edge down to 1, single pixels at 255, 128
    and 3, and a one-pixel line at 200."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    radius = np.hypot(rows - 200.0, cols - 230.0)
    mask = np.clip((60.0 - radius) * 255.0 / 12.0, 0, 255).astype(np.uint8)  # 255 inside r 48, 0 beyond 60
    mask[100, 400], mask[350, 101], mask[400, 402] = 255, 128, 3
    mask[300, 50:450] = 200
    return mask


def mask_files() -> dict[str, Image.Image]:
    """The soft mask as other files: in the red channel (plus a green-only square); RGBA, opaque; RGBA
    drawn in transparency (colour 0, alpha = the mask); a palette (indices = mask // 64, colours black,
    dark red, black, white); 16 bits (x 257, plus a square saved as 1)."""
    mask = soft_mask()
    zero = np.zeros_like(mask)
    green = zero.copy()
    green[400:420, 300:320] = 255
    palette = Image.fromarray(mask // 64, "P")
    palette.putpalette([0, 0, 0, 100, 0, 0, 0, 0, 0, 255, 255, 255])
    deep = mask.astype(np.uint16) * 257
    deep[20:60, 20:60] = 1
    return {
        "red": Image.fromarray(np.dstack([mask, green, zero])),
        "opaque": Image.fromarray(np.dstack([mask, mask, mask, np.full_like(mask, 255)])),
        "drawn": Image.fromarray(np.dstack([zero, zero, zero, mask])),
        "palette": palette,
        "deep": Image.fromarray(deep),
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """An MVTec-layout class: one training image, a good RGB and a good grayscale test image, a defect with
    the soft mask, a defect whose mask is one pixel, and one defect per file kind of `mask_files`."""
    root = tmp_path_factory.mktemp("inputs")
    files = {
        "train/good/000.png": Image.fromarray(texture(0)),
        "test/good/000.png": Image.fromarray(texture(1)),
        "test/good/001.png": Image.fromarray(texture(2)[..., 1]),  # grayscale on disk
        "test/crack/000.png": Image.fromarray(texture(3)),
        "ground_truth/crack/000_mask.png": Image.fromarray(soft_mask()),
        "test/dot/000.png": Image.fromarray(texture(4)),
    }
    dot = np.zeros((HEIGHT, WIDTH), np.uint8)
    dot[DOT] = 255
    files["ground_truth/dot/000_mask.png"] = Image.fromarray(dot)
    for i, (kind, mask) in enumerate(mask_files().items()):
        files[f"test/{kind}/000.png"] = Image.fromarray(texture(5 + i))
        files[f"ground_truth/{kind}/000_mask.png"] = mask
    for name, image in files.items():
        path = root / "part" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return root


def dinomaly_official(image_path, mask_path, label):
    """guojiajeremy/Dinomaly: torchvision Resize((448, 448)) on the PIL image, ToTensor, CenterCrop(392),
    Normalize; the mask: Resize((448, 448)) (bilinear) on the PIL mask as opened, CenterCrop(392), ToTensor;
    at evaluation nearest to 256, > 0, the maximum over channels. Label: the folder."""
    image = T.Resize((448, 448))(Image.open(image_path).convert("RGB"))
    x = T.Normalize(MEAN, STD)(T.CenterCrop(392)(T.ToTensor()(image)))
    if mask_path is None:
        gt = torch.zeros(1, 392, 392)
    else:
        gt = T.ToTensor()(T.CenterCrop(392)(T.Resize((448, 448))(Image.open(mask_path))))
    gt = F.interpolate(gt[None].float(), size=256, mode="nearest")[0] != 0  # int16 for a 16-bit file
    return x, gt.amax(0), label


def uniad_official(image_path, mask_path, label):
    """zhiyuanyou/UniAD: cv2.imread colour, BGR -> RGB, PIL, Resize([224, 224], BILINEAR), ToTensor,
    Normalize; the mask: cv2.imread grayscale (zeros for a good image), PIL, Resize(NEAREST), ToTensor, > 0.
    Label: the mask at 224 has a pixel != 0."""
    rgb = cv2.cvtColor(cv2.imread(str(image_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    image = T.Resize([224, 224], BILINEAR)(Image.fromarray(rgb, "RGB"))
    x = T.Normalize(MEAN, STD)(T.ToTensor()(image))
    grey = np.zeros(rgb.shape[:2], np.uint8) if mask_path is None else cv2.imread(str(mask_path), 0)
    mask = T.ToTensor()(T.Resize([224, 224], NEAREST)(Image.fromarray(grey, "L")))
    return x, mask[0] > 0, int(mask.sum() != 0)


def dualad_official(image_path, mask_path, label):
    """cyhaan/DualAD: cv2.imread colour, BGR -> RGB, cv2.resize to (224, 224) (bilinear), ToTensor, Normalize;
    the mask: cv2.imread grayscale, cv2.resize INTER_NEAREST, ToTensor, then .numpy().astype(int). Label: the
    folder."""
    rgb = cv2.cvtColor(cv2.imread(str(image_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    x = T.Normalize(MEAN, STD)(T.ToTensor()(Image.fromarray(cv2.resize(rgb, (224, 224)), "RGB")))
    if mask_path is None:
        return x, torch.zeros(224, 224, dtype=torch.bool), label
    grey = cv2.resize(cv2.imread(str(mask_path), 0), (224, 224), interpolation=cv2.INTER_NEAREST)
    mask = T.ToTensor()(Image.fromarray(grey, "L")).numpy().astype(int)
    return x, torch.from_numpy(mask[0]) > 0, label


def ours_written_out(image_path, mask_path, label):
    """The r224 default: PIL decode, cv2.resize bilinear to 224; the mask (a palette by its colours, colour
    by its largest colour channel, alpha where the colour is all zero) > half its maximum at full size,
    then cv2 INTER_NEAREST. Label: the folder."""
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    x = T.Normalize(MEAN, STD)(T.ToTensor()(cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_LINEAR)))
    if mask_path is None:
        return x, torch.zeros(224, 224, dtype=torch.bool), label
    img = Image.open(mask_path)
    img = img.convert("RGB") if img.mode == "P" else img
    grey = np.asarray(img)
    if img.mode == "RGBA":
        grey = grey[..., :3].max(axis=2) if grey[..., :3].any() else grey[..., 3]
    elif grey.ndim == 3:
        grey = grey.max(axis=2)
    binary = (grey > 0.5 * grey.max()).astype(np.uint8)
    return x, torch.from_numpy(cv2.resize(binary, (224, 224), interpolation=cv2.INTER_NEAREST)) > 0, label


OFFICIAL = {
    "dinomaly392": dinomaly_official,
    "uniad224": uniad_official,
    "dualad224": dualad_official,
    "r224": ours_written_out,
}


def datamodule(tmp_path, root, *overrides: str):
    cfg = compose_config(
        [
            "dataset=mvtec",
            f"dataset.root={root}",
            "dataset.strict=false",
            "dataset.num_workers=0",
            *overrides,
        ],
        output_dir=tmp_path / "run",
        data_dir=tmp_path / "data",
    )
    protocol = build_protocol(cfg)
    dm = build_datamodule(cfg, protocol)
    dm.setup()
    return dm, protocol


@pytest.mark.parametrize("cache", [False, True], ids=["plain", "cached"])
@pytest.mark.parametrize("preset", sorted(OFFICIAL))
def test_preset_input_equals_the_official_steps(tmp_path, tree, preset, cache):
    dm, protocol = datamodule(tmp_path, tree, f"protocol={preset}", f"dataset.cache={str(cache).lower()}")
    assert (dm.test_set.cache is not None) == cache
    labels = {}
    for i, sample in enumerate(dm.test_set.samples):
        item = dm.test_set[i]
        x, mask, label = OFFICIAL[preset](sample.path, sample.mask_path, sample.label)
        assert item["image"].shape == x.shape, sample.path
        assert (item["image"] - x).abs().max() <= 1e-6, sample.path
        assert torch.equal(protocol.masks_for_eval(item["mask"][None])[0], mask), sample.path
        evaluated = protocol.labels(torch.tensor([item["label"]]), item["mask"][None], [item["has_mask"]])
        assert int(evaluated) == label, sample.path  # the label the evaluation ranks (protocol.label_rule)
        labels[sample.defect] = int(evaluated)
    train = dm.train_set.samples[0]
    assert (dm.train_set[0]["image"] - OFFICIAL[preset](train.path, None, 0)[0]).abs().max() <= 1e-6
    # the lone-pixel defect: UniAD's label comes from its 224 mask, where PIL's nearest pick drops it; so
    # is the mask drawn in transparency, which OpenCV reads as grey 0
    uniad = preset == "uniad224"
    assert labels == {"good": 0, "crack": 1, "dot": int(not uniad), "drawn": int(not uniad)} | {
        kind: 1 for kind in ("red", "opaque", "palette", "deep")
    }


def test_mask_files_differ_as_the_official_decoders_do(tmp_path, tree):
    """Defect pixels (at the metric size) per mask file: Dinomaly counts an opaque RGBA file everywhere and
    a palette by its indices (UniAD by its colours); DualAD keeps only grey 255, so the red mask (grey 76)
    is empty; a 16-bit square saved as 1 is lost by OpenCV's high byte; the mask drawn in transparency is
    empty for OpenCV, ours reads its alpha."""
    counts = {}
    for preset in ("dinomaly392", "uniad224", "dualad224", "r224"):
        dm, protocol = datamodule(tmp_path / preset, tree, f"protocol={preset}")
        for i, sample in enumerate(dm.test_set.samples):
            mask = protocol.masks_for_eval(dm.test_set[i]["mask"][None])[0]
            counts[preset, sample.defect] = int(mask.sum()), mask.numel()
    assert counts["dinomaly392", "opaque"][0] == counts["dinomaly392", "opaque"][1]
    assert counts["dualad224", "red"][0] == 0 < counts["uniad224", "red"][0]
    assert counts["uniad224", "drawn"][0] == counts["dualad224", "drawn"][0] == 0 < counts["r224", "drawn"][0]
    assert counts["uniad224", "palette"][0] < counts["dinomaly392", "palette"][0]  # index 2 is black
    assert counts["uniad224", "deep"][0] == counts["uniad224", "crack"][0]  # the 1s vanish
    assert counts["r224", "opaque"] == counts["r224", "crack"] < counts["r224", "red"]  # + the green square


def test_soft_mask_rules_differ_as_the_papers_do():
    """On the soft mask at 224: Dinomaly's bilinear resize widens the defect, DualAD's truncation keeps only
    grey level 255, ours keeps > half the maximum; label maps count every non-zero pixel."""
    mask = soft_mask()
    counts = {}
    for name, keys in {
        "dinomaly": dict(resize="pil", mask_resize="pil_bilinear", mask_rule="resize_then_threshold"),
        "uniad": dict(resize="pil", mask_resize="pil_nearest", mask_rule="resize_then_threshold"),
        "dualad": dict(mask_rule="resize_then_truncate"),
        "ours": dict(),
    }.items():
        threshold = 0.5 if name == "ours" else 0.0
        transform = InputTransform(224, mask_threshold=threshold, **keys)
        counts[name] = int(transform(texture(0), mask)[1].sum())
    assert counts["dinomaly"] > counts["uniad"] > counts["ours"] > counts["dualad"] > 0
    labels = np.array([[0, 1, 2], [3, 0, 0]], np.uint8)
    levels = InputTransform(224, mask_rule="resize_then_truncate").mask_levels(labels, labels=True)
    assert np.array_equal(levels, np.where(labels > 0, 255, 0))


@pytest.mark.parametrize(
    ("key", "value"),
    [("resize", "skimage"), ("mask_resize", "area"), ("mask_rule", "otsu"), ("label_rule", "json")],
)
def test_unknown_input_keys_name_the_key(tmp_path, tree, key, value):
    with pytest.raises(ValueError, match=f"protocol.{key} '{value}' is not one of"):
        datamodule(tmp_path, tree, f"++protocol.{key}={value}")
