"""Data loader throughput: training images/s of `AnomalyDataModule` at the 256 preset (ADer) and at
448 -> 392 (Dinomaly), with and without the image cache, with 0 and 2 worker processes, on a generated
MVTec-like tree of 512 px PNGs in a temporary folder."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from uad.data import AnomalyDataModule
from uad.data.synthetic import SyntheticSpec, ensure_synthetic

SPEC = SyntheticSpec(image_size=512, train_per_class=24, test_good=1, test_per_defect=1)
PRESETS = {"256": (256, None), "448 -> 392": (448, 392)}
BATCH = 16


def measure(root: Path, size: int, crop: int | None, cache: bool, workers: int) -> tuple[float, float]:
    """(seconds of setup, including the cache fill; images/s of the second pass over the training set)."""
    dm = AnomalyDataModule(
        {"image_size": size, "crop_size": crop},
        "synthetic",
        root,
        num_workers=workers,
        batch_size=BATCH,
        cache=cache,
        pin_memory=torch.cuda.is_available(),
        synthetic=asdict(SPEC),
    )
    start = time.perf_counter()
    dm.setup()
    setup = time.perf_counter() - start
    loader = dm.train_dataloader()
    for _ in loader:  # the first pass starts the workers
        pass
    start, images = time.perf_counter(), 0
    for batch in loader:
        images += batch["image"].shape[0]
    return setup, images / (time.perf_counter() - start)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ensure_synthetic(tmp, SPEC)
        rows = []
        for preset, (size, crop) in PRESETS.items():
            for cache in (False, True):
                for workers in (0, 2):
                    setup, rate = measure(Path(tmp), size, crop, cache, workers)
                    rows.append((preset, cache, workers, setup, rate))
    n = 3 * SPEC.train_per_class
    print("## Data loading: `AnomalyDataModule` training loader\n")
    print(
        f"A generated MVTec-like tree (3 classes, {n} training PNGs of {SPEC.image_size}x{SPEC.image_size}), "
        f"batch {BATCH}; images/s over the second pass of the training set (decode, resize, crop, normalise, "
        f"collate). Setup includes reading the tree and, with `dataset.cache=true`, decoding every image "
        f"once.\n"
    )
    print("| preset | cache | workers | setup s | images/s |")
    print("|---|---|---|---|---|")
    for preset, cache, workers, setup, rate in rows:
        print(f"| {preset} | {'yes' if cache else 'no'} | {workers} | {setup:.2f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
