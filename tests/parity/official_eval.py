"""Issue 15's acceptance check: an official checkpoint through `mode=eval` against the official test pipeline.

    # 1. the official side: seeded checkpoint in the official layout + the official test pipeline
    python tests/parity/official_eval.py official --method dinomaly --backbone dinov2_vits14_reg \\
        --official /work/official/Dinomaly --data ROOT --checkpoint /tmp/model.pth --out official.json
    # 2. ours, on that file
    python run.py mode=eval ckpt_path=/tmp/model.pth method=dinomaly backbone=dinov2_vits14_reg \\
        dataset=mvtec dataset.root=ROOT dataset.strict=false hydra.run.dir=OURS
    # 3. the issue's three criteria
    python tests/parity/official_eval.py compare --official-json official.json --ours OURS
    # RD4AD: its file holds bn and decoder only; the encoder goes to /tmp/model_encoder.pth, for ours add
    #   backbone.weights=/tmp/model_encoder.pth

`official` imports the official code from `--official` (a checkout at the commit of make_fixtures.OFFICIAL,
its `.cuda()` calls made `.cpu()` as make_fixtures.py says; `easydict`, `tabulate` and, for Dinomaly,
`pandas` on PYTHONPATH), builds the official model at full size, fills it by the seeded rule (seeded.py),
saves it as the official code saves it, and runs the official test code on every test image of `--data`:
the official dataset class and transforms, anomaly map, image score and metric calls. It writes numbers
only: the key -> shape table (the test rebuilds the checkpoint from it), per image (path relative to the
data root, score), per class I-AUROC and P-AUROC, and the seconds taken.

Only what the CPU needs is changed around the official code, never its arithmetic: `Tensor.cuda` is the
identity while it runs (UniAD's image score moves the maps to the GPU), `np.int` is `int` (removed from
numpy 1.24, used by UniAD's label rule), Dinomaly's and RD4AD's AUPRO are skipped (not compared, minutes
of CPU), and the loaders use no worker processes. The official scores are read where the official code
computes them: Dinomaly's from the arguments of its image-level `roc_auc_score` call, UniAD's from its
`EvalImageMax`, DualAD's from the model's `pred_image`, RD4AD's from the arguments of its `roc_auc_score`
calls, ViTAD's from the arguments of ADer's image-level `roc_auc_score`, INP-Former's from the scores its
`evaluation_batch` hands its metric function, whose pixel metrics (adeval, CUDA only) are replaced by the
sklearn path the official function keeps commented out.

ADer (ViTAD) runs from a working directory outside its checkout (see make_fixtures.py); its DefaultAD
dataset reads `<root>/meta.json` and accepts only roots named like a benchmark, so the data classes are
linked into a temporary `mvtec/` folder whose meta.json ADer's own `gen_benchmark/mvtec.py` writes. Its
evaluator runs with `use_adeval=False` (sklearn on every pixel); the recipe's `use_adeval=True` P-AUROC is a
50-strip histogram approximation (package `adeval`, CUDA only) and is not compared here.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.parity.make_fixtures import (  # noqa: E402
    BACKBONES,
    INPFORMER_UNUSED_MODULES,
    MEAN,
    OFFICIAL,
    PROTOCOLS,
    STD,
    Rd4adOfficial,
    _import_rd4ad_test,
    ader_imports,
    dinomaly_model,
    fill,
    helper_model,
    inpformer_model,
    mambaad_model,
    official_config,
    scan_indices,
    stubbed_modules,
    vitad_model,
)

# The methods whose official test pipeline this script runs (no Ho config is released), their backbones.
BACKBONES = {
    method: BACKBONES[method]
    for method in ("dinomaly", "uniad", "dualad_he", "rd4ad", "vitad", "mambaad", "inpformer")
}
SCORE_TOL, AUROC_TOL = 1e-3, 1e-4  # issue 15: scores within 1e-3 of their spread, AUROCs within 1e-4


def classes_of(data: Path) -> list[str]:
    """The classes of an MVTec-layout folder: sub-folders with a `test` folder, sorted."""
    return sorted(p.name for p in data.iterdir() if (p / "test").is_dir())


def relative(path: str | Path, data: Path) -> str:
    """`path` relative to the data root, with forward slashes: the key both sides share."""
    return Path(path).resolve().relative_to(data.resolve()).as_posix()


@contextlib.contextmanager
def cpu_for_cuda() -> Iterator[None]:
    """`Tensor.cuda` as the identity and `np.int` as `int`, for the duration (see the module docstring)."""
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    had_int = hasattr(np, "int")
    np.int = int  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda  # type: ignore[method-assign]
        if not had_int:
            del np.int  # type: ignore[attr-defined]


def save_official(method: str, model: torch.nn.Module, path: Path, config: Any = None) -> None:
    """The model saved as the official code saves it: Dinomaly `torch.save(model.state_dict())` (a bare
    ViTill state dict); UniAD and DualAD `tools/train_val.py`'s dict (epoch, the EasyDict `arch`, state
    dict, a numpy best metric, optimizer state), UniAD's state dict with the DDP `module.` prefix."""
    state = model.state_dict()
    if method in ("dinomaly", "inpformer"):  # INP_Former_*.py: torch.save(model.state_dict(), ...model.pth)
        torch.save(state, path)
        return
    if method == "rd4ad":  # main.py's file; the encoder (torchvision's download there) beside it
        torch.save({"bn": model.bn.state_dict(), "decoder": model.decoder.state_dict()}, path)
        torch.save(model.encoder.state_dict(), rd4ad_encoder_file(path))
        return
    if method in ("vitad", "mambaad"):  # ADer's BaseTrainer.save_checkpoint: ckpt.pth, state dict at `net`
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-4)
        torch.save({"net": state, "optimizer": optimizer.state_dict(), "iter": 1, "epoch": 1}, path)
        return
    prefix = "module." if method == "uniad" else ""
    trainable = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    torch.save(
        {
            "epoch": 1,
            "arch": config.net,
            "state_dict": {prefix + k: v for k, v in state.items()},
            "best_metric": np.float64(0.5),
            "optimizer": torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-4).state_dict(),
        },
        path,
    )


def recorded_auroc(module: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Replace `module.roc_auc_score` by the same function that also records its (labels, scores) in the
    returned list: the official scores, read where the official code ranks them."""
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    auroc = module.roc_auc_score

    def recorded(y_true: np.ndarray, y_score: np.ndarray) -> float:
        calls.append((np.asarray(y_true), np.asarray(y_score)))
        return auroc(y_true, y_score)

    module.roc_auc_score = recorded
    return calls


def rd4ad_encoder_file(checkpoint: Path) -> Path:
    """Where the RD4AD encoder's weights go (its checkpoint holds none): `backbone.weights=` for ours."""
    return checkpoint.with_name(checkpoint.stem + "_encoder.pth")


def run_rd4ad(model: torch.nn.Module, data: Path, classes: list[str]) -> tuple[list, dict]:
    """test.py's `evaluation` per class: MVTecDataset with get_data_transforms(256, 256), batches of 1 in
    order; the AUROCs are taken unrounded from its two `roc_auc_score` calls (pixel, then image), which it
    returns rounded to 3 decimals; its AUPRO (pandas) is not run."""
    from dataset import MVTecDataset, get_data_transforms

    test = _import_rd4ad_test()
    auroc = test.roc_auc_score  # the unrecorded one, for the metrics below
    calls = recorded_auroc(test)
    test.compute_pro = lambda *args: math.nan
    transform, gt_transform = get_data_transforms(256, 256)
    images, metrics = [], {}
    for cls in classes:
        dataset = MVTecDataset(str(data / cls), transform, gt_transform, phase="test")
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
        test.evaluation(model.encoder, model.bn, model.decoder, loader, "cpu")
        (pixel_true, pixel_score), (image_true, image_score) = calls[-2:]
        assert len(image_score) == len(dataset)
        images += [(relative(p, data), float(s)) for p, s in zip(dataset.img_paths, image_score)]
        metrics[cls] = {"I-AUROC": auroc(image_true, image_score), "P-AUROC": auroc(pixel_true, pixel_score)}
    return images, metrics


def run_dinomaly(model: torch.nn.Module, data: Path, classes: list[str]) -> tuple[list, dict]:
    """dinomaly_mvtec_uni.py's test: MVTecDataset with get_data_transforms(448, 392), batches of 16 in
    order, `evaluation_batch(model, loader, device, max_ratio=0.01, resize_mask=256)` per class."""
    import utils as official_utils
    from dataset import MVTecDataset, get_data_transforms

    calls = recorded_auroc(official_utils)
    official_utils.compute_pro = lambda *args: math.nan
    transform, gt_transform = get_data_transforms(448, 392)
    images, metrics = [], {}
    for cls in classes:
        dataset = MVTecDataset(str(data / cls), transform, gt_transform, phase="test")
        loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False, num_workers=0)
        result = official_utils.evaluation_batch(model, loader, "cpu", max_ratio=0.01, resize_mask=256)
        labels, scores = calls[-1]  # evaluation_batch's second AUROC call: the image level
        assert len(scores) == len(dataset) and np.array_equal(labels, dataset.labels)
        images += [(relative(p, data), float(s)) for p, s in zip(dataset.img_paths, scores)]
        metrics[cls] = {"I-AUROC": float(result[0]), "P-AUROC": float(result[3])}
    return images, metrics


def run_inpformer(model: torch.nn.Module, data: Path, classes: list[str]) -> tuple[list, dict]:
    """INP_Former_Multi_Class.py's test: its MVTecDataset with get_data_transforms(448, 392), batches of 16 in
    order, `evaluation_batch(model, loader, device, max_ratio=0.01, resize_mask=256)` per class. Its metric
    call `ader_evaluator` (adeval's CUDA accumulator for the pixel metrics) is replaced by the CPU path the
    same function keeps commented out: sklearn's AUROC of the image scores and of every pixel; the maps,
    masks and scores are the ones evaluation_batch hands it."""
    from sklearn.metrics import roc_auc_score

    with stubbed_modules(INPFORMER_UNUSED_MODULES):
        import utils as official_utils
        from dataset import MVTecDataset, get_data_transforms

    calls = []

    def cpu_evaluator(pr_px: np.ndarray, pr_sp: np.ndarray, gt_px: np.ndarray, gt_sp: np.ndarray) -> list:
        calls.append(pr_sp)
        i_auroc, p_auroc = roc_auc_score(gt_sp, pr_sp), roc_auc_score(gt_px.ravel(), pr_px.ravel())
        return [i_auroc, math.nan, math.nan, p_auroc, math.nan, math.nan, math.nan]

    official_utils.ader_evaluator = cpu_evaluator
    transform, gt_transform = get_data_transforms(448, 392)
    images, metrics = [], {}
    for cls in classes:
        dataset = MVTecDataset(str(data / cls), transform, gt_transform, phase="test")
        loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False, num_workers=0)
        result = official_utils.evaluation_batch(model, loader, "cpu", max_ratio=0.01, resize_mask=256)
        scores = calls[-1]
        assert len(scores) == len(dataset)
        images += [(relative(p, data), float(s)) for p, s in zip(dataset.img_paths, scores)]
        metrics[cls] = {"I-AUROC": float(result[0]), "P-AUROC": float(result[3])}
    return images, metrics


def _meta_file(data: Path, classes: list[str], path: Path) -> None:
    """UniAD's test meta file for the tree (one JSON line per image, as data/MVTec-AD/test.json)."""
    lines = []
    for cls in classes:
        for image in sorted((data / cls / "test").glob("*/*.png")):
            defect, name = image.parent.name, image.name
            meta = {"filename": f"{cls}/test/{defect}/{name}", "label": int(defect != "good")}
            meta["label_name"] = "good" if defect == "good" else "defective"
            if defect != "good":
                meta["maskname"] = f"{cls}/ground_truth/{defect}/{image.stem}_mask.png"
            lines.append(json.dumps(meta | {"clsname": cls}))
    path.write_text("\n".join(lines) + "\n")


def run_uniad(model: torch.nn.Module, config: Any, data: Path, classes: list[str]) -> tuple[list, dict]:
    """tools/train_val.py's validate on one process: the CustomDataset loader of datasets/data_builder.py,
    `dump` of every batch, `merge_together`, `performances` with the config's metrics."""
    from datasets.data_builder import build
    from utils.eval_helper import EvalImageMax, dump, merge_together, performances

    with tempfile.TemporaryDirectory() as tmp:
        _meta_file(data, classes, Path(tmp) / "test.json")
        config.dataset.image_reader.kwargs.image_dir = str(data)
        config.dataset.test.meta_file = str(Path(tmp) / "test.json")
        config.dataset.workers = 0
        loader = build(config.dataset, training=False, distributed=False)
        eval_dir = Path(tmp) / "eval"
        eval_dir.mkdir()
        with torch.no_grad():
            for batch in loader:
                dump(str(eval_dir), model(batch))
        fileinfos, preds, masks = merge_together(str(eval_dir))
    metrics = performances(fileinfos, preds, masks, config.evaluator.metrics)
    pool = next(m.kwargs.avgpool_size for m in config.evaluator.metrics.auc if m.name == "max")
    images = []
    for cls in classes:
        rows = [i for i, info in enumerate(fileinfos) if info["clsname"] == cls]
        scores = EvalImageMax.encode_pred(preds[rows], pool)
        images += [(fileinfos[i]["filename"], float(s)) for i, s in zip(rows, scores)]
    per_class = {
        c: {"I-AUROC": metrics[f"{c}_max_auc"], "P-AUROC": metrics[f"{c}_pixel_auc"]} for c in classes
    }
    return images, per_class


def run_dualad(model: torch.nn.Module, config: Any, data: Path, classes: list[str]) -> tuple[list, dict]:
    """tools/train_val.py's validate: the MVTecDataset_test loader, the model's `pred_pixel` / `pred_image`,
    `performances` with image_auc and pixel_auc (the config's other metrics are not compared)."""
    from datasets.mvtec_dataset import build_mvtec_test_dataloader
    from utils.eval_helper import performances

    config.dataset.update(image_dir=str(data), classes=classes, num_workers=0)
    loader = build_mvtec_test_dataloader(config.dataset)
    infos: dict[str, list] = {k: [] for k in ("preds_pixel", "preds_image", "masks", "labels", "classes")}
    files = []
    with torch.no_grad():
        for batch in loader:
            out = model(batch)
            infos["preds_pixel"].append(out["pred_pixel"].cpu().numpy())
            infos["preds_image"].append(out["pred_image"].cpu().numpy())
            infos["masks"].append(out["mask"].cpu().numpy().astype(int))
            infos["labels"].append(out["label"].cpu().numpy())
            infos["classes"].append(out["cls_name"])
            files += list(out["file_name"])
    image_infos = {k: np.concatenate(v, axis=0) for k, v in infos.items()}
    metrics = performances(image_infos, ["image_auc", "pixel_auc"])
    images = [(relative(f, data), float(s)) for f, s in zip(files, image_infos["preds_image"])]
    per_class = {
        c: {"I-AUROC": metrics[f"{c}_image_auc"], "P-AUROC": metrics[f"{c}_pixel_auc"]} for c in classes
    }
    return images, per_class


def _ader_root(data: Path, classes: list[str], tmp: Path) -> Path:
    """`tmp/mvtec` with the classes of `data` linked in and meta.json by ADer's MVTecSolver."""
    from data.gen_benchmark.mvtec import MVTecSolver

    root = tmp / "mvtec"
    root.mkdir()
    for cls in classes:
        (root / cls).symlink_to(data / cls, target_is_directory=True)
    solver = MVTecSolver(root=str(root), is2D=True)
    solver.CLSNAMES = classes
    solver.run()
    return root


def run_ader(
    model: torch.nn.Module, data: Path, classes: list[str], batch_size: int, pooling_ks: list[int] | None
) -> tuple[list, dict]:
    """ADer's ViTADTrainer.test and MambaADTrainer.test (the same steps) on one process: DefaultAD with the
    recipe's test and target transforms, batches of `batch_size` in order, cal_anomaly_map(...,
    amap_mode='add', gaussian_sigma=4), masks > 0.5, then Evaluator.run per class with the recipe's
    `pooling_ks` (ViTAD [16, 16], MambaAD None: the map's max) for mAUROC_sp_max and mAUROC_px."""
    import torchvision.transforms.functional as TF
    import util.metric as metric
    from data.ad_dataset import DefaultAD
    from data.utils import get_transforms

    importlib.import_module("data.transforms")  # registers ADer's transforms (`data` is a parameter here)
    calls = recorded_auroc(metric)
    size = 256
    image_steps = [
        {"type": "Resize", "size": (size, size), "interpolation": TF.InterpolationMode.BILINEAR},
        {"type": "CenterCrop", "size": (size, size)},
        {"type": "ToTensor"},
        {"type": "Normalize", "mean": MEAN, "std": STD, "inplace": True},
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = _ader_root(data, classes, Path(tmp))
        cfg = argparse.Namespace(
            data=argparse.Namespace(
                root=str(root),
                meta="meta.json",
                cls_names=classes,
                loader_type="pil",
                loader_type_target="pil_L",
            )
        )
        dataset = DefaultAD(
            cfg,
            train=False,
            transform=get_transforms(cfg, False, image_steps),
            target_transform=get_transforms(cfg, False, [*image_steps[:3]]),
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        masks, maps, names, anomalies, paths = [], [], [], [], []
        with torch.no_grad():
            for batch in loader:
                feats_t, feats_s = model(batch["img"])
                amap, _ = metric.Evaluator.cal_anomaly_map(
                    feats_t, feats_s, [size, size], uni_am=False, amap_mode="add", gaussian_sigma=4
                )
                mask = batch["img_mask"]
                mask[mask > 0.5], mask[mask <= 0.5] = 1, 0
                masks.append(mask.numpy().astype(int))
                maps.append(amap)
                names.append(np.array(batch["cls_name"]))
                anomalies.append(batch["anomaly"].numpy().astype(int))
                paths += [relative(Path(p).resolve(), data) for p in batch["img_path"]]
        results = {"imgs_masks": masks, "anomaly_maps": maps, "cls_names": names, "anomalys": anomalies}
        results = {k: np.concatenate(v, axis=0) for k, v in results.items()}
        evaluator = metric.Evaluator(["mAUROC_sp_max", "mAUROC_px"], pooling_ks=pooling_ks, use_adeval=False)
        images, per_class = [], {}
        for cls in classes:
            out = evaluator.run(results, cls)
            _, scores = calls[-2]  # mAUROC_sp_max: gt_sp against the pooled maxima, in dataset order
            rows = [p for p, n in zip(paths, results["cls_names"]) if n == cls]
            assert len(rows) == len(scores)
            images += [(p, float(s)) for p, s in zip(rows, scores)]
            per_class[cls] = {"I-AUROC": float(out["mAUROC_sp_max"]), "P-AUROC": float(out["mAUROC_px"])}
    return images, per_class


def official_side(args: argparse.Namespace) -> dict:
    """Build, fill, save and test the official model; the record `--out` holds."""
    official, args.data = args.official.resolve(), args.data.resolve()
    sys.path.insert(0, str(official))
    torch.manual_seed(0)
    np.random.seed(0)
    classes = args.classes or classes_of(args.data)
    config = None
    if args.method == "dinomaly":
        model = dinomaly_model(args.backbone)
    elif args.method == "inpformer":
        model, _ = inpformer_model(args.backbone)
    elif args.method == "rd4ad":
        model = Rd4adOfficial()
    elif args.method == "vitad":
        ader_imports()
        model = vitad_model()
    elif args.method == "mambaad":
        ader_imports()
        model = mambaad_model(official, args.ader.resolve(), args.mamba_ssm)
    else:
        config = official_config(official)
        model = helper_model(config)
    if args.method == "uniad":
        model.reconstruction.save_recon = None
    rebuild = fill(model, prefix="module." if args.method == "uniad" else "")
    model.eval()
    save_official(args.method, model, args.checkpoint, config)
    start, cpu = time.perf_counter(), time.process_time()
    with cpu_for_cuda():
        if args.method == "dinomaly":
            images, per_class = run_dinomaly(model, args.data, classes)
        elif args.method == "inpformer":
            images, per_class = run_inpformer(model, args.data, classes)
        elif args.method == "uniad":
            images, per_class = run_uniad(model, config, args.data, classes)
        elif args.method == "rd4ad":
            images, per_class = run_rd4ad(model, args.data, classes)
        elif args.method == "vitad":  # vitad_256_100e: batch_test_per 8, pooling_ks [16, 16]
            images, per_class = run_ader(model, args.data, classes, 8, [16, 16])
        elif args.method == "mambaad":  # mambaad_256_100e: batch_test_per 16, pooling_ks None
            images, per_class = run_ader(model, args.data, classes, 16, None)
        else:
            images, per_class = run_dualad(model, config, args.data, classes)
    seconds = {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}
    repo, commit = OFFICIAL[args.method]
    return {
        "method": args.method,
        "official": {"repo": repo, "commit": commit, "command": " ".join(["python", *sys.argv])},
        "config": {"method": args.method, "backbone": args.backbone, "protocol": PROTOCOLS[args.method]},
        "data": {"root": str(args.data), "classes": classes},
        "images": dict(sorted(images)),
        "per_class": per_class,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        **rebuild,
        **({"scan_indices": scan_indices(model, rebuild)} if args.method == "mambaad" else {}),
    }


def compare(official: dict, predictions: Path, results: Path, data: Path) -> dict[str, dict[str, float]]:
    """Per class: the largest |our score - official score| over the spread (max - min) of the official
    scores, |I-AUROC diff| and |P-AUROC diff|; from our `predictions.csv` and `results.json`. Every
    official image must have our score."""
    with predictions.open() as f:
        ours = {relative(row["path"], data): float(row["score"]) for row in csv.DictReader(f)}
    per_class = json.loads(results.read_text())["per_class"]
    missing = sorted(set(official["images"]) - set(ours))
    assert not missing, f"{len(missing)} official images without our score, e.g. {missing[:3]}"
    out = {}
    for cls, metrics in official["per_class"].items():
        paths = [p for p in official["images"] if p.split("/")[0] == cls]
        theirs = np.array([official["images"][p] for p in paths])
        diff = np.abs(np.array([ours[p] for p in paths]) - theirs)
        out[cls] = {
            "images": len(paths),
            "score": float(diff.max() / (theirs.max() - theirs.min())),
            "I-AUROC": abs(per_class[cls]["I-AUROC"] - metrics["I-AUROC"]),
            "P-AUROC": abs(per_class[cls]["P-AUROC"] - metrics["P-AUROC"]),
        }
    return out


def passes(diffs: dict[str, dict[str, float]]) -> bool:
    """Issue 15's criteria on every class."""
    return all(
        d["score"] <= SCORE_TOL and d["I-AUROC"] <= AUROC_TOL and d["P-AUROC"] <= AUROC_TOL
        for d in diffs.values()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("official", help="seeded official checkpoint + the official test pipeline")
    run.add_argument("--method", choices=sorted(BACKBONES), required=True)
    run.add_argument("--backbone", help="our backbone name (default: the method's only one)")
    run.add_argument("--official", type=Path, required=True, help="checkout of the official repository")
    run.add_argument("--data", type=Path, required=True, help="an MVTec-layout root")
    run.add_argument("--classes", nargs="*", help="default: every class of --data")
    run.add_argument("--checkpoint", type=Path, required=True, help="where the official-layout file goes")
    run.add_argument("--out", type=Path, required=True, help="the numbers (JSON)")
    run.add_argument("--ader", type=Path, help="MambaAD: checkout of the ADer framework")
    run.add_argument("--mamba-ssm", type=Path, help="MambaAD: unpacked mamba-ssm sdist, if not installed")
    cmp = commands.add_parser("compare", help="our mode=eval run folder against an `official` record")
    cmp.add_argument("--official-json", type=Path, required=True)
    cmp.add_argument("--ours", type=Path, required=True, help="the mode=eval run folder")
    args = parser.parse_args()
    if args.command == "official":
        backbones = BACKBONES[args.method]
        args.backbone = args.backbone or next(iter(backbones))
        if args.backbone not in backbones:
            parser.error(f"--backbone for {args.method}: one of {backbones}")
        record = official_side(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
        print(json.dumps({"per_class": record["per_class"], "seconds": record["seconds"]}))
        return
    official = json.loads(args.official_json.read_text())
    ours = json.loads((args.ours / "results.json").read_text())
    diffs = compare(
        official, args.ours / "predictions.csv", args.ours / "results.json", Path(official["data"]["root"])
    )
    seconds = ours["run"].get("evaluated_checkpoint", {}).get("seconds")
    print(
        json.dumps(
            {
                "diffs": diffs,
                "pass": passes(diffs),
                "ours_seconds": seconds,
                "official_seconds": official["seconds"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
