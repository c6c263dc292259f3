"""Procedural MVTec-layout dataset, the embedded default: one texture (`weave`) and two objects (`nut`,
`pill`) with scratches, holes, stains, contamination, missing parts, cracks and colour changes.

Every image is drawn from its own random stream keyed by (seed, class, split, defect, index), so the set
is deterministic by seed. The scene, the defect and the sensor noise use separate streams: the defective
image equals its clean twin outside the mask to the bit, which is how the tests prove that masks match
defects. The tree is written once into a temporary folder and renamed into place, then reused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

VERSION = 2
DEFECTS: dict[str, tuple[str, ...]] = {
    "weave": ("scratch", "hole", "stain", "colour"),
    "nut": ("missing", "scratch", "contamination"),
    "pill": ("colour", "crack", "missing"),
}
SYNTHETIC_CLASSES = tuple(DEFECTS)


@dataclass(frozen=True)
class SyntheticSpec:
    """What determines the generated tree; part of its folder name and of its manifest."""

    seed: int = 0
    image_size: int = 256
    train_per_class: int = 40
    test_good: int = 8
    test_per_defect: int = 3

    @property
    def folder_name(self) -> str:
        return (
            f"v{VERSION}_seed{self.seed}_{self.image_size}px_{self.train_per_class}train_"
            f"{self.test_good}good_{self.test_per_defect}per-defect"
        )


# --- scenes -------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y, x


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: white noise blurred with a Gaussian of `scale` pixels."""
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), scale)
    return noise / (np.abs(noise).max() + 1e-6)


def _weave(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A plain-weave fabric: alternating warp and weft threads with fibre noise."""
    y, x = _grid(size)
    angle = rng.uniform(-0.04, 0.04)
    u = x * np.cos(angle) + y * np.sin(angle) + rng.uniform(0, 12)
    v = -x * np.sin(angle) + y * np.cos(angle) + rng.uniform(0, 12)
    period = 12.0
    cell = (np.floor(u / period) + np.floor(v / period)) % 2
    warp = np.sin(np.pi * (u % period) / period) ** 0.6
    weft = np.sin(np.pi * (v % period) / period) ** 0.6
    thread = np.where(cell == 0, warp, weft)
    fibres = _smooth_noise(rng, size, 1.2) * 0.08
    shade = 0.55 + 0.35 * thread + fibres + rng.uniform(-0.04, 0.04)
    colour = np.array([0.80, 0.72, 0.58]) * rng.uniform(0.985, 1.015, 3)
    return np.clip(shade[..., None] * colour, 0, 1).astype(np.float32), np.ones((size, size), bool)


def _nut(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A hexagonal metal nut on a dark table, at a random angle and position, with a bore."""
    y, x = _grid(size)
    cy, cx = size / 2 + rng.uniform(-0.04, 0.04, 2) * size
    radius, bore = 0.34 * size, 0.14 * size
    angle = rng.uniform(0, np.pi / 3)
    corners = np.stack(
        [
            cx + radius * np.cos(angle + np.arange(6) * np.pi / 3),
            cy + radius * np.sin(angle + np.arange(6) * np.pi / 3),
        ],
        1,
    )
    body = np.zeros((size, size), np.uint8)
    cv2.fillPoly(body, [np.round(corners * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    r = np.hypot(y - cy, x - cx)
    body = body.astype(bool) & (r > bore)
    table = 0.18 + 0.05 * (x / size) + 0.02 * _smooth_noise(rng, size, 8)
    light = rng.uniform(0, 2 * np.pi)
    metal = 0.62 + 0.12 * np.cos(np.arctan2(y - cy, x - cx) - light) + 0.03 * np.sin(r / 2.5)
    metal += 0.04 * _smooth_noise(rng, size, 3)
    grey = np.where(body, metal, table)
    tint = np.array([1.0, 1.0, 1.04]) * rng.uniform(0.95, 1.05)
    return np.clip(grey[..., None] * tint, 0, 1).astype(np.float32), body


def _pill(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A two-tone capsule (red cap, white body) on a light tray, slightly rotated and shifted."""
    y, x = _grid(size)
    cy, cx = size / 2 + rng.uniform(-0.04, 0.04, 2) * size
    angle = rng.uniform(-0.2, 0.2)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    half_len, half_w = 0.30 * size, 0.12 * size
    d = np.hypot(np.clip(np.abs(u) - (half_len - half_w), 0, None), v)  # distance to the capsule's axis
    body = d < half_w
    shade = np.sqrt(np.clip(1 - (d / half_w) ** 2, 0, 1))  # a cylinder lit from the front
    cap = np.array([0.78, 0.14, 0.12]) * rng.uniform(0.95, 1.05)
    shell = np.array([0.93, 0.91, 0.86]) * rng.uniform(0.97, 1.02)
    colour = np.where((u < 0)[..., None], cap, shell)
    highlight = 0.25 * np.exp(-((v + 0.4 * half_w) ** 2) / 6)  # a specular stripe along the capsule
    pill = colour * (0.55 + 0.45 * shade[..., None]) + highlight[..., None]
    tray = (0.86 + 0.02 * _smooth_noise(rng, size, 10))[..., None] * np.array([1.0, 1.0, 0.98])
    image = np.where(body[..., None], pill, tray)
    scene = np.stack([u, v], -1)
    return np.clip(image, 0, 1).astype(np.float32), (body, scene, half_len, half_w)


RENDER = {"weave": _weave, "nut": _nut, "pill": _pill}


# --- defects ------------------------------------------------------------------------------------------


def _object_mask(class_name: str, scene) -> np.ndarray:
    return scene[0] if class_name == "pill" else scene


def _random_point(rng: np.random.Generator, region: np.ndarray, margin: int = 0) -> tuple[int, int]:
    ys, xs = np.nonzero(region)
    keep = (ys >= margin) & (ys < region.shape[0] - margin) & (xs >= margin) & (xs < region.shape[1] - margin)
    i = rng.integers(keep.sum())
    return int(ys[keep][i]), int(xs[keep][i])


def _curve_mask(
    rng: np.random.Generator,
    size: int,
    start: tuple[int, int],
    length: float,
    width: int,
    jagged: bool = False,
) -> np.ndarray:
    """A smooth (scratch) or jagged (crack) polyline from `start`, drawn `width` pixels wide."""
    heading = rng.uniform(0, 2 * np.pi)
    points, (py, px) = [], start
    steps = 12
    for _ in range(steps + 1):
        points.append((px, py))
        heading += rng.normal(0, 0.5 if jagged else 0.08)
        py += np.sin(heading) * length / steps
        px += np.cos(heading) * length / steps
    mask = np.zeros((size, size), np.uint8)
    cv2.polylines(mask, [np.round(np.array(points)).astype(np.int32)], False, 1, thickness=width)
    return mask.astype(bool)


def _blob_mask(rng: np.random.Generator, size: int, centre: tuple[int, int], radius: float) -> np.ndarray:
    """An irregular blob: an ellipse whose border is perturbed by smooth noise."""
    y, x = _grid(size)
    ry, rx = radius * rng.uniform(0.6, 1.2, 2)
    t = rng.uniform(0, np.pi)
    dy, dx = y - centre[0], x - centre[1]
    a = (dx * np.cos(t) + dy * np.sin(t)) / rx
    b = (-dx * np.sin(t) + dy * np.cos(t)) / ry
    return np.hypot(a, b) + 0.25 * _smooth_noise(rng, size, radius / 2) < 1.0


def _apply(image: np.ndarray, mask: np.ndarray, new: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None], new, image)


def add_defect(
    class_name: str, defect: str, image: np.ndarray, scene, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect; return (image, mask). The image changes only where the mask is set."""
    size = image.shape[0]
    region = _object_mask(class_name, scene)
    centre = _random_point(rng, region, margin=size // 8)
    severity = rng.uniform(0.3, 1.0)  # from barely visible to obvious: contrast and size scale with it
    if defect in ("scratch", "crack"):
        jagged = defect == "crack"
        length = (0.1 + 0.2 * severity) * size
        mask = _curve_mask(rng, size, centre, length, int(rng.integers(1, 3)) + 1, jagged) & region
        sign = -1.0 if jagged or rng.random() < 0.5 else 1.0
        new = image + sign * (0.12 + 0.3 * severity)
    elif defect == "hole":
        inner = _blob_mask(rng, size, centre, (0.02 + 0.035 * severity) * size)
        rim = cv2.dilate(inner.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~inner
        new = np.where(inner[..., None], image * (1 - 0.9 * severity), image * 1.2)  # dark hole, frayed rim
        mask = inner | rim
    elif defect == "stain":
        mask = _blob_mask(rng, size, centre, (0.04 + 0.05 * severity) * size)
        tone = np.array([0.35, 0.22, 0.10]) * rng.uniform(0.8, 1.2)
        alpha = 0.25 + 0.4 * severity
        new = image * (1 - alpha) + tone * alpha
    elif defect == "contamination":
        mask = np.zeros((size, size), bool)
        for _ in range(int(rng.integers(1, 5))):
            point = _random_point(rng, region, margin=size // 8)
            mask |= _blob_mask(rng, size, point, rng.uniform(0.01, 0.022) * size)
        mask &= region
        alpha = 0.5 + 0.5 * severity
        new = image * (1 - alpha) + np.array([0.20, 0.16, 0.08]) * rng.uniform(0.7, 1.3) * alpha
    elif defect == "colour":
        alpha = 0.35 + 0.65 * severity
        if class_name == "pill":
            body, uv = scene[0], scene[1]
            mask = body & (uv[..., 0] < 0)  # the whole cap has the wrong colour
            swapped = image[..., [2, 1, 0]] * np.array([1.0, 1.3, 1.0])
        else:
            mask = _blob_mask(rng, size, centre, (0.05 + 0.05 * severity) * size)
            swapped = image[..., [1, 2, 0]]
        new = image * (1 - alpha) + swapped * alpha
    elif defect == "missing":
        mask, new = _missing_part(class_name, image, scene, centre, rng)
    else:
        raise ValueError(f"unknown synthetic defect '{defect}' for class '{class_name}'")
    mask &= region
    return _apply(image, mask, np.clip(new, 0, 1)).astype(np.float32), mask


def _missing_part(class_name: str, image: np.ndarray, scene, centre, rng) -> tuple[np.ndarray, np.ndarray]:
    """A broken-off piece: the object's pixels in a wedge (nut) or at one end (pill) show the background."""
    size = image.shape[0]
    y, x = _grid(size)
    if class_name == "nut":
        cy, cx = size / 2, size / 2
        start = rng.uniform(0, 2 * np.pi)
        ang = (np.arctan2(y - cy, x - cx) - start) % (2 * np.pi)
        mask = scene & (ang < rng.uniform(0.2, 0.6)) & (np.hypot(y - cy, x - cx) > 0.22 * size)
        background = 0.18 + 0.05 * (x / size)
        return mask, np.repeat(background[..., None], 3, axis=2)
    body, uv, half_len, _ = scene
    end = rng.choice([-1.0, 1.0])
    bite_u = end * (half_len - rng.uniform(0.02, 0.06) * size)
    bite_v = rng.uniform(-0.08, 0.08) * size
    mask = body & (np.hypot(uv[..., 0] - bite_u, uv[..., 1] - bite_v) < rng.uniform(0.05, 0.09) * size)
    return mask, np.full_like(image, 0.86)


# --- images and the tree ------------------------------------------------------------------------------


def _streams(spec: SyntheticSpec, class_name: str, split: str, defect: str, index: int):
    key = [
        spec.seed,
        SYNTHETIC_CLASSES.index(class_name),
        ("train", "test").index(split),
        (("good",) + DEFECTS[class_name]).index(defect),
        index,
    ]
    return [np.random.default_rng([*key, stream]) for stream in range(3)]


def _finish(image: np.ndarray, noise_rng: np.random.Generator) -> np.ndarray:
    noisy = image + noise_rng.normal(0, 0.012, image.shape).astype(np.float32)
    return np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)


def generate_image(
    spec: SyntheticSpec, class_name: str, split: str, defect: str, index: int, with_defect: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 HxWx3, mask bool HxW) pair; `with_defect=False` gives the defect's clean twin."""
    scene_rng, defect_rng, noise_rng = _streams(spec, class_name, split, defect, index)
    image, scene = RENDER[class_name](scene_rng, spec.image_size)
    mask = np.zeros(image.shape[:2], bool)
    if defect != "good" and with_defect:
        for _ in range(20):  # redraw a defect that the object's border clipped to almost nothing
            painted, mask = add_defect(class_name, defect, image, scene, defect_rng)
            if mask.sum() >= 30:
                image = painted
                break
        else:
            raise RuntimeError(f"could not place a '{defect}' defect on synthetic {class_name} #{index}")
    return _finish(image, noise_rng), mask


def _write_tree(folder: Path, spec: SyntheticSpec) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for class_name, defects in DEFECTS.items():
        jobs = [("train", "good", spec.train_per_class), ("test", "good", spec.test_good)]
        jobs += [("test", d, spec.test_per_defect) for d in defects]
        counts[class_name] = {}
        for split, defect, n in jobs:
            out = folder / class_name / split / defect
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image, mask = generate_image(spec, class_name, split, defect, i)
                Image.fromarray(image).save(out / f"{i:03d}.png")
                if defect != "good":
                    gt = folder / class_name / "ground_truth" / defect
                    gt.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask.astype(np.uint8) * 255).save(gt / f"{i:03d}_mask.png")
            counts[class_name][f"{split}/{defect}"] = n
    return counts


def ensure_synthetic(root: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Return the folder of the synthetic tree for `spec` under `root`, generating it on first use.

    Generation goes to a temporary sibling folder that is renamed into place only when complete, so an
    interrupted run never leaves a half-written tree and concurrent runs do not clash.
    """
    spec = spec or SyntheticSpec()
    root = Path(root).expanduser().resolve()
    folder = root / spec.folder_name
    manifest = folder / "manifest.json"
    if manifest.is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder_name}.", dir=root))
    try:
        counts = _write_tree(tmp, spec)
        (tmp / "manifest.json").write_text(
            json.dumps(
                {
                    "generator": "uad.data.synthetic",
                    "version": VERSION,
                    "spec": asdict(spec),
                    "counts": counts,
                },
                indent=2,
            )
        )
        try:
            tmp.rename(folder)
        except OSError:
            if not manifest.is_file():  # someone else's complete tree is fine; anything else is not
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
