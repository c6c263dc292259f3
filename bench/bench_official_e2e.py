"""End to end against the official scripts: training (process start to the last optimiser step) and
evaluation (process start to the metrics), official script against `python run.py`, per method, on the same
images, the same number of optimiser steps, the same backbone, image size, batch size and threads.

    UAD_OFFICIAL_DIR=/work/official/checkouts python bench/bench_official_e2e.py [--quick] [--repeats N]
    ... --stages eval --test-repeat 10    # evaluation on every test image 10 times (570 images)

A test set of 57 images is mostly process start-up on either side; --test-repeat K evaluates each test image
(and its mask) K times under K names, as a test set the size of MVTec AD's (1,725) or VisA's (2,162)
would be evaluated, and writes its own section.

The checkouts (UniAD/ = github.com/zhiyuanyou/UniAD, Dinomaly/ = github.com/guojiajeremy/Dinomaly,
DualAD/ = github.com/cyhaan/DualAD) are never part of uad; without UAD_OFFICIAL_DIR the script prints one
line and exits 0. Each side runs in its own process through bench/e2e_launch.py (which says what the
official side gets to run on the CPU); the official side needs easydict, tensorboardX, ptflops, pandas,
tabulate and colorama importable (`--official-path DIR` puts a folder holding them on its PYTHONPATH).

What both sides run, per method (the official config or script, with its data paths pointed at the data):
- UniAD: experiments/MVTec-AD/config.yaml (EfficientNet-B4 224, batch 8, AdamW, clip 0.1) vs
  `experiment=uniad_mvtec`; DualAD-He: its MVTec-AD config (WRes50 224, batch 16) vs
  `experiment=dualad_mvtec`; Dinomaly: dinomaly_mvtec_uni.py (StableAdamW, hard mining, clip 0.1) vs
  `experiment=dinomaly_mvtec`, both on ViT-S/14-reg at 256 -> 224 and batch 16 instead of ViT-B at
  448 -> 392 (CPU time).
- Random backbone weights on both sides (no download; `backbone.pretrained=false`), loader workers 0 on both
  (ours' default on a CPU), OMP/MKL threads = --threads on both.
- Ours trains with `feature_cache=memory` (the recipes have no image augmentation: the cache is exact).
- Evaluation: one official-layout checkpoint (random weights, saved as the official code saves it) read by
  both: the official test path (UniAD/DualAD `train_val.py -e`, Dinomaly the script's test block) against
  `mode=eval ckpt_path=...`, which computes all seven metrics (UniAD's official test computes I- and
  P-AUROC only, Dinomaly's and DualAD's all seven). Official outputs that ours does not make are switched
  off on the official side (UniAD's reconstructions and compound images), which can only favour it.

Wall seconds are from process start to exit (the training runs exit right after their last step), CPU
seconds are the children's user + system time. Images/s: training steps x batch / wall; evaluation test
images / wall. Sides run in turn (official, ours, official, ours with --repeats 2) and the median is kept.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from gpu_check import write_section  # noqa: E402

SECTION = "## End to end against the official scripts (training and evaluation)"
DATA = ROOT.parent / "shared" / "realdata"
FOLDERS = {"uniad": "UniAD", "dualad_he": "DualAD", "dinomaly": "Dinomaly"}
LABELS = {
    "uniad": "UniAD (effb4 224, batch 8)",
    "dualad_he": "DualAD-He (wres50 224, batch 16)",
    "dinomaly": "Dinomaly (ViT-S/14 reg 256->224, batch 16)",
}
EPOCHS = (3, 2)  # training epochs of the chosen images (full, --quick): the cache fills in the first
BATCH = {"uniad": 8, "dualad_he": 16, "dinomaly": 16}
DROP_LAST = {"uniad": False, "dualad_he": False, "dinomaly": True}  # the official loaders, as ours
OURS = {
    "uniad": ["experiment=uniad_mvtec"],
    "dualad_he": ["experiment=dualad_mvtec"],
    "dinomaly": [
        "experiment=dinomaly_mvtec",
        "backbone=dinov2_vits14_reg",
        "protocol.image_size=256",
        "protocol.crop_size=224",
    ],
}


def classes_of(data: Path) -> list[str]:
    return sorted(p.name for p in data.iterdir() if (p / "test").is_dir())


def uniad_meta(data: Path, classes: list[str], split: str, path: Path) -> None:
    """UniAD's meta file (one JSON line per image, as its data/MVTec-AD/{train,test}.json)."""
    lines = []
    for cls in classes:
        for image in sorted((data / cls / split).glob("*/*.png")):
            defect = image.parent.name
            meta = {"filename": f"{cls}/{split}/{defect}/{image.name}", "label": int(defect != "good")}
            meta["label_name"] = "good" if defect == "good" else "defective"
            if defect != "good":
                meta["maskname"] = f"{cls}/ground_truth/{defect}/{image.stem}_mask.png"
            lines.append(json.dumps(meta | {"clsname": cls}))
    path.write_text("\n".join(lines) + "\n")


def repeated_test_set(data: Path, classes: list[str], repeat: int, root: Path) -> Path:
    """A data root whose classes have `data`'s training images and every test image and mask `repeat` times
    (symbolic links named <stem>_r<k>), so that both sides read the same larger test set."""
    for cls in classes:
        (root / cls).mkdir(parents=True)
        (root / cls / "train").symlink_to((data / cls / "train").resolve())
        for image in sorted((data / cls / "test").glob("*/*.png")):
            defect = image.parent.name
            mask = data / cls / "ground_truth" / defect / f"{image.stem}_mask.png"
            for k in range(repeat):
                for source, target in (
                    (image, root / cls / "test" / defect / f"{image.stem}_r{k}.png"),
                    (mask, root / cls / "ground_truth" / defect / f"{image.stem}_r{k}_mask.png"),
                ):
                    if source.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.symlink_to(source.resolve())
    return root


def official_config(method: str, checkout: Path, data: Path, classes: list[str], tmp: Path) -> Path:
    """The official MVTec-AD config with the data, the checkpoint and the CPU settings of this bench."""
    config = yaml.safe_load((checkout / "experiments" / "MVTec-AD" / "config.yaml").read_text())
    dataset = config["dataset"]
    if method == "uniad":
        uniad_meta(data, classes, "train", tmp / "train.json")
        uniad_meta(data, classes, "test", tmp / "test.json")
        dataset["image_reader"]["kwargs"]["image_dir"] = str(data)
        dataset["train"]["meta_file"] = str(tmp / "train.json")
        dataset["test"]["meta_file"] = str(tmp / "test.json")
        dataset["workers"] = 0
        next(n for n in config["net"] if n["name"] == "reconstruction")["kwargs"]["save_recon"] = None
    else:
        dataset.update(image_dir=str(data), classes=classes, num_workers=0)
    config["evaluator"].pop("vis_compound", None)
    config["net"][0]["kwargs"]["pretrained"] = False
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))  # training: the official load_path, a file that is not there
    config["saver"]["load_path"] = str(tmp / "official.pth")
    (tmp / "config_eval.yaml").write_text(yaml.safe_dump(config))
    return path


def timed(cmd: list[str], env: dict[str, str], log: Path, last: int = 0) -> dict[str, float]:
    """Wall and CPU seconds (children's user + system) of one process; its output goes to `log`. A
    training run (`last` > 0) also gives `step_wall` and `step_cpu`: the median seconds per optimiser step
    over its `last` final steps, once the first epoch (and any cache fill) is behind it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    clocks = log.with_suffix(".steps.json")
    start = time.perf_counter()
    with log.open("w") as out:
        env = env | {"UAD_E2E_STEP_TIMES": str(clocks)} if last else env
        rc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc:
        tail = log.read_text()[-2500:]
        raise RuntimeError(f"exit {rc}: {' '.join(cmd)[:300]}\n{tail}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    out = {"wall": wall, "cpu": cpu}
    if last:
        steps = json.loads(clocks.read_text())[-last - 1 :]
        for i, key in enumerate(("step_wall", "step_cpu")):
            out[key] = statistics.median(b[i] - a[i] for a, b in itertools.pairwise(steps))
    return out


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.classes = args.classes or classes_of(args.data)
        threads = str(args.threads)
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
        base.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, CUDA_VISIBLE_DEVICES="")
        self.env_ours = base | {"PYTHONPATH": str(ROOT / "src")}
        extra = [args.official_path] if args.official_path else []
        self.env_official = base | {
            "PYTHONPATH": os.pathsep.join(extra),
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",  # the official torch.load calls predate weights_only
        }
        self.launch = [sys.executable, str(HERE / "e2e_launch.py")]
        self.train_images, self.test_images = (
            sum(len(list((args.data / c / split).glob("*/*.png"))) for c in self.classes)
            for split in ("train", "test")
        )

    def job(self, method: str, stage: str) -> dict:
        checkout = self.args.official / FOLDERS[method]
        tmp = self.tmp / method
        tmp.mkdir(exist_ok=True)
        job = {
            "method": method,
            "stage": stage,
            "checkout": str(checkout),
            "data": str(self.args.data),
            "classes": self.classes,
            "checkpoint": str(tmp / "official.pth"),
        }
        if method == "dinomaly":
            job.update(encoder="dinov2reg_vit_small_14", image_size=256, crop_size=224, workers=0)
            job["batch_size"] = BATCH[method]
        else:
            config = official_config(method, checkout, self.args.data, self.classes, tmp)
            job["config"] = str(config if stage == "train" else config.with_name("config_eval.yaml"))
        return job

    def ours(self, method: str, stage: str, steps: int) -> list[str]:
        run_dir = self.tmp / method / f"ours_{stage}_{time.monotonic_ns()}"
        common = [
            *OURS[method],
            f"dataset.root={self.args.data}",
            f"dataset.classes=[{','.join(self.classes)}]",
            "dataset.strict=false",
            "backbone.pretrained=false",
            f"hydra.run.dir={run_dir}",
            "callbacks.progress=null",
        ]
        if stage == "train":
            return [*self.launch, str(steps), "ours", *common, "feature_cache=memory"]
        checkpoint = self.tmp / method / "official.pth"
        return [*self.launch, "0", "ours", *common, "mode=eval", f"ckpt_path={checkpoint}"]

    def official(self, method: str, stage: str, steps: int) -> list[str]:
        return [*self.launch, str(steps), "official", json.dumps(self.job(method, stage))]

    def measure(self, method: str) -> dict:
        batch, images = BATCH[method], self.train_images
        per_epoch = images // batch if DROP_LAST[method] else math.ceil(images / batch)
        steps = per_epoch * EPOCHS[1 if self.args.quick else 0]
        logs = self.tmp / method
        logs.mkdir(exist_ok=True)
        save = self.official(method, "save", 0)
        timed(save, self.env_official, logs / "save.log")
        out: dict = {"steps": steps, "batch": batch, "per_epoch": per_epoch}
        for stage, n in (("train", steps), ("eval", 0)):
            if stage not in self.args.stages:
                continue
            runs: dict[str, list[dict[str, float]]] = {"official": [], "ours": []}
            for r in range(self.args.repeats):
                for side in ("official", "ours"):
                    cmd = getattr(self, side)(method, stage, n)
                    env = self.env_official if side == "official" else self.env_ours
                    last = per_epoch if stage == "train" else 0
                    runs[side].append(timed(cmd, env, logs / f"{side}_{stage}_{r}.log", last))
                    print(f"  {method} {stage} {side}: {runs[side][-1]}", file=sys.stderr, flush=True)
            out[stage] = {
                side: {k: statistics.median(t[k] for t in times) for k in times[0]}
                for side, times in runs.items()
            }
        return out


def row(label: str, stage: str, images: int, r: dict) -> str:
    official, ours = r["official"], r["ours"]
    ips = [images / official["wall"], images / ours["wall"]]
    step = " | | |"
    if "step_wall" in ours:  # the last epoch's steps: what every later epoch of a long training costs
        walls, cpus = [official["step_wall"], ours["step_wall"]], [official["step_cpu"], ours["step_cpu"]]
        step = (
            f" {walls[0]:.2f} / {walls[1]:.2f} | {cpus[0]:.2f} / {cpus[1]:.2f} | {walls[0] / walls[1]:.2f}x "
            f"({cpus[0] / cpus[1]:.2f}x) |"
        )
    return (
        f"| {label} | {stage} | {images} | {official['wall']:.1f} / {ours['wall']:.1f} | "
        f"{official['cpu']:.1f} / {ours['cpu']:.1f} | {ips[0]:.2f} / {ips[1]:.2f} | "
        f"**{ips[1] / ips[0]:.2f}x** | {official['cpu'] / ours['cpu']:.2f}x |{step}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, default=os.environ.get("UAD_OFFICIAL_DIR"))
    parser.add_argument("--official-path", default=os.environ.get("UAD_OFFICIAL_PYTHONPATH"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--classes", nargs="*", help="default: every class of --data")
    parser.add_argument("--methods", nargs="*", default=list(FOLDERS), choices=list(FOLDERS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--stages", nargs="+", default=["train", "eval"], choices=["train", "eval"])
    parser.add_argument("--test-repeat", type=int, default=1, help="evaluate each test image K times")
    parser.add_argument("--quick", action="store_true", help="fewer steps, one class: a check, not a result")
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (configs, logs, runs)")
    args = parser.parse_args(argv)
    if not args.official:
        print(f"{SECTION}\n\nSkipped: set UAD_OFFICIAL_DIR to a folder with the official checkouts.")
        return 0
    if args.quick and not args.classes:
        args.classes = ["bottle"]
    section = SECTION if args.test_repeat == 1 else f"{SECTION}: each test image {args.test_repeat} times"
    start = time.perf_counter()
    lines = [
        section,
        "",
        f"`{' '.join(['python bench/bench_official_e2e.py', *(argv if argv is not None else sys.argv[1:])])}`"
        f" on {args.threads} threads, data `{args.data}`, official checkouts `{args.official}`; load average "
        f"at start {os.getloadavg()[0]:.1f}. Wall / CPU seconds: official / ours; ratios ours over official "
        "(images/s) and official over ours (CPU s). Method: bench/bench_official_e2e.py's docstring.",
        "",
        "| method | stage | images | wall s | CPU s | images/s | images/s ratio | CPU ratio | last-epoch "
        "wall s/step | CPU s/step | per-step ratio wall (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="uad_e2e_") as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep or Path(tmp)
        if args.test_repeat > 1:
            args.classes = args.classes or classes_of(args.data)
            args.data = repeated_test_set(args.data, args.classes, args.test_repeat, work / "data")
        bench = Bench(args, work)
        for method in args.methods:
            checkout = args.official / FOLDERS[method]
            if not checkout.is_dir():
                lines.append(f"| {LABELS[method]} | skipped: no {checkout} | | | | | | | | | |")
                continue
            try:
                r = bench.measure(method)
            except RuntimeError as err:
                why = str(err).splitlines()[0][:200]
                lines.append(f"| {LABELS[method]} | failed: {why} | | | | | | | | | |")
                print(err, file=sys.stderr)
                continue
            images = r["steps"] * r["batch"]
            stage = f"train ({r['steps']} steps, {EPOCHS[args.quick]} epochs)"
            if "train" in r:
                lines.append(row(LABELS[method], stage, images, r["train"]))
            if "eval" in r:
                lines.append(row(LABELS[method], "eval (test set)", bench.test_images, r["eval"]))
            print("\n".join(lines[-2:]), file=sys.stderr, flush=True)
    lines += ["", f"Classes: {', '.join(bench.classes)}; took {time.perf_counter() - start:.0f} s."]
    print("\n".join(lines))
    if not args.no_write and not args.quick:
        write_section(lines, args.results, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
