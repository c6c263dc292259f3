"""One side of bench_official_e2e.py, in its own process: ours (`run.py`) or an official script, run as its
user runs it, with the CPU shims the official code needs and a stop after the last optimiser step.

    python bench/e2e_launch.py STEPS SIDE [ARGS...]

STEPS > 0: after the STEPS-th optimiser step of any torch optimiser the process ends at once (`os._exit`),
so that a run is timed from process start to its last step, the same way on both sides (the parent measures
wall and CPU seconds of the whole process). STEPS = 0: the script runs to its end (evaluation).

SIDE is `ours` (ARGS: run.py's command line) or `official` (ARGS: a JSON job from bench_official_e2e.py:
method, train or eval, the checkout, the data, the sizes). The official side gets only what the CPU needs:
`.cuda()` is the identity, `np.int` is `int` (UniAD), torch.distributed is a one-process gloo group and
DDP a pass-through (UniAD's script always wraps the model), the DINOv2 encoder is built without its
download (random weights; ours runs with `backbone.pretrained=false` alike), Dinomaly's AUPRO gets
back pandas' DataFrame.append (removed in pandas 2) as the concat it was, and DualAD's validate numpy's
object array for batches of unequal length (refused since numpy 1.24). Nothing of its arithmetic
changes. Only torch and the official code are imported on that side, none of uad.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import tempfile
from pathlib import Path

PROFILE = None
if os.environ.get("UAD_E2E_PROFILE"):
    import cProfile

    PROFILE = cProfile.Profile()
    PROFILE.enable()


def finish(code: int = 0) -> None:
    """Flush, write the profile if one runs (UAD_E2E_PROFILE=FILE: cProfile of the whole run), exit now."""
    if PROFILE is not None:
        PROFILE.disable()
        PROFILE.dump_stats(os.environ["UAD_E2E_PROFILE"])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def stop_after(steps: int) -> None:
    """End the process right after the `steps`-th optimiser step (a global post-step hook). With
    UAD_E2E_STEP_TIMES=FILE, the wall and CPU clock at each step go there first (JSON: [[wall, cpu], ...])."""
    import time

    from torch.optim.optimizer import register_optimizer_step_post_hook

    clocks: list[tuple[float, float]] = []

    def hook(*_args) -> None:
        clocks.append((time.perf_counter(), time.process_time()))
        if len(clocks) == steps:
            if os.environ.get("UAD_E2E_STEP_TIMES"):
                Path(os.environ["UAD_E2E_STEP_TIMES"]).write_text(json.dumps(clocks))
            finish()

    register_optimizer_step_post_hook(hook)


def cpu_shims() -> None:
    """What the official code needs to run on the CPU (see the module docstring)."""
    import numpy as np
    import torch

    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    torch.UntypedStorage.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    np.int = int  # type: ignore[attr-defined]

    class PassThrough(torch.nn.Module):
        """DistributedDataParallel on one process without its buckets: `.module` as DDP exposes it."""

        def __init__(self, module: torch.nn.Module, *args, **kwargs) -> None:
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    torch.nn.parallel.DistributedDataParallel = PassThrough  # type: ignore[misc]


def one_process_group(tmp: str) -> tuple[int, int]:
    """torch.distributed as a gloo group of one process (UniAD's setup_distributed expects a launcher)."""
    import torch.distributed as dist

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo", init_method=f"file://{tmp}/group", rank=0, world_size=1)
    return 0, 1


def helper_script(job: dict, tmp: str) -> None:
    """UniAD or DualAD: tools/train_val.py with the job's config file (train, or `-e` to evaluate)."""
    checkout = job["checkout"]
    sys.path.insert(0, checkout)
    if job["method"] == "uniad":
        import utils.dist_helper

        utils.dist_helper.setup_distributed = lambda *args, **kwargs: one_process_group(tmp)
    import models.model_helper

    def on_cpu(self):
        self.device = __import__("torch").device("cpu")
        return self

    models.model_helper.ModelHelper.cuda = on_cpu
    sys.argv = [f"{checkout}/tools/train_val.py", "--config", job["config"]]
    if job["stage"] == "eval":
        sys.argv.append("-e")
    script = runpy.run_path(sys.argv[0], run_name="train_val")  # defines main, does not call it
    script["main"].__globals__["np"] = RaggedNumpy()
    script["main"]()


class RaggedNumpy:
    """numpy as DualAD's validate knew it (numpy < 1.24): `np.asarray` of batches of unequal length (the
    last test batch) gives an object array, which `np.concatenate` then joins; everything else is numpy."""

    def __getattr__(self, name: str):
        return getattr(__import__("numpy"), name)

    @staticmethod
    def asarray(value, *args, **kwargs):
        import numpy as np

        try:
            return np.asarray(value, *args, **kwargs)
        except ValueError:
            ragged = np.empty(len(value), dtype=object)
            for i, part in enumerate(value):
                ragged[i] = part
            return ragged


def dinomaly_encoder(name: str):
    """models.vit_encoder.load without the download: the same DINOv2-reg ViT, random weights."""
    from dinov2.models import vision_transformer as dinov2

    arch, patch = name.split("_")[-2], int(name.split("_")[-1])
    return getattr(dinov2, f"vit_{arch}")(
        patch_size=patch,
        img_size=518,
        block_chunks=0,
        init_values=1e-8,
        num_register_tokens=4,
        interpolate_antialias=False,
        interpolate_offset=0.1,
    )


def dinomaly_model(job: dict):
    """ViTill as dinomaly_mvtec_uni.py builds it for the job's encoder (ViT-S or ViT-B, blocks 2-9 tapped,
    two fused groups, 8 linear-attention decoder blocks); the official code on sys.path."""
    from functools import partial

    import torch
    from models.uad import ViTill
    from models.vision_transformer import Block, LinearAttention2, bMlp

    dim, heads = {"small": (384, 6), "base": (768, 12)}[job["encoder"].split("_")[-2]]
    bottleneck = torch.nn.ModuleList([bMlp(dim, dim * 4, dim, drop=0.2)])
    norm = partial(torch.nn.LayerNorm, eps=1e-8)
    decoder = torch.nn.ModuleList(
        Block(dim=dim, num_heads=heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm, attn=LinearAttention2)
        for _ in range(8)
    )
    groups, taps = [[0, 1, 2, 3], [4, 5, 6, 7]], list(range(2, 10))
    return ViTill(dinomaly_encoder(job["encoder"]), bottleneck, decoder, taps, groups, groups, 0)


def dinomaly_source(job: dict) -> str:
    """dinomaly_mvtec_uni.py with the job's sizes in place of its literals (the script has no options for
    them): encoder, resize, crop, batch, loader workers and the class list. Each literal must be found."""
    text = Path(job["checkout"], "dinomaly_mvtec_uni.py").read_text()
    swaps = {
        "    encoder_name = 'dinov2reg_vit_base_14'\n": f"    encoder_name = '{job['encoder']}'\n",
        "    image_size = 448\n": f"    image_size = {job['image_size']}\n",
        "    crop_size = 392\n": f"    crop_size = {job['crop_size']}\n",
        "    batch_size = 16\n": f"    batch_size = {job['batch_size']}\n",
        "shuffle=True, num_workers=4,": f"shuffle=True, num_workers={job['workers']},",
        "    item_list = ['carpet',": f"    item_list = {job['classes']!r}\n    _official_items = ['carpet',",
    }
    for old, new in swaps.items():
        if text.count(old) != 1:
            raise SystemExit(f"dinomaly_mvtec_uni.py: expected one {old.strip()!r}; another commit?")
        text = text.replace(old, new)
    return text


def dinomaly(job: dict, tmp: str) -> None:
    """Train: the script itself (dinomaly_source). Eval: its test block (the `(it + 1) % 5000` branch of
    train) on the model of the same script loaded from the job's state dict: per class MVTecDataset, a
    loader of batch_size in order, `evaluation_batch(max_ratio=0.01, resize_mask=256)`, the per-class line
    and the mean line it prints."""
    checkout = job["checkout"]
    sys.path.insert(0, checkout)
    import models.vit_encoder
    import pandas

    models.vit_encoder.load = dinomaly_encoder
    if not hasattr(pandas.DataFrame, "append"):  # compute_pro's DataFrame.append left pandas in 2.0
        pandas.DataFrame.append = lambda self, row, ignore_index=False: pandas.concat(
            [self, pandas.DataFrame([row])], ignore_index=ignore_index
        )
    script = str(Path(checkout, "dinomaly_mvtec_uni.py"))
    if job["stage"] == "train":
        sys.argv = [script, "--data_path", job["data"], "--save_dir", tmp]
        code = compile(dinomaly_source(job), script, "exec")
        exec(code, {"__name__": "__main__", "__file__": script})
        return
    import numpy as np
    import torch
    from dataset import MVTecDataset, get_data_transforms
    from utils import evaluation_batch

    model = dinomaly_model(job)
    model.load_state_dict(torch.load(job["checkpoint"], map_location="cpu"))
    transform, gt_transform = get_data_transforms(job["image_size"], job["crop_size"])
    rows = []
    for item in job["classes"]:
        test_data = MVTecDataset(
            root=os.path.join(job["data"], item), transform=transform, gt_transform=gt_transform, phase="test"
        )
        loader = torch.utils.data.DataLoader(
            test_data, batch_size=job["batch_size"], shuffle=False, num_workers=job["workers"]
        )
        rows.append(evaluation_batch(model, loader, "cpu", max_ratio=0.01, resize_mask=256))
        print(item, " ".join(f"{v:.4f}" for v in rows[-1]), flush=True)
    print("Mean", " ".join(f"{v:.4f}" for v in np.mean(rows, axis=0)), flush=True)


def save_checkpoint(job: dict) -> None:
    """The model of the job, random weights (seed 0), saved as the official code saves it: Dinomaly a bare
    ViTill state dict; UniAD and DualAD train_val.py's dict (UniAD's keys with DDP's `module.`), its `arch`
    as plain lists and dicts so that it loads without easydict (ours reads it with weights_only)."""
    import torch

    torch.manual_seed(0)
    sys.path.insert(0, job["checkout"])
    if job["method"] == "dinomaly":
        torch.save(dinomaly_model(job).state_dict(), job["checkpoint"])
        return
    import yaml
    from easydict import EasyDict
    from models.model_helper import ModelHelper
    from utils.misc_helper import update_config

    config = update_config(EasyDict(yaml.safe_load(Path(job["config"]).read_text())))
    state = ModelHelper(config.net).state_dict()
    prefix = "module." if job["method"] == "uniad" else ""
    arch = json.loads(json.dumps(config.net))
    record = {"epoch": 1, "arch": arch, "state_dict": {prefix + k: v for k, v in state.items()}}
    torch.save(record | {"best_metric": 0.5}, job["checkpoint"])


def official(job: dict) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    cpu_shims()
    if job["stage"] == "save":
        save_checkpoint(job)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if job["method"] == "dinomaly":
            os.chdir(tmp)
            dinomaly(job, tmp)
        else:  # train.sh runs from the experiment's folder, the one holding config.yaml
            os.chdir(Path(job["config"]).parent)
            helper_script(job, tmp)


def main() -> None:
    steps, side, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if steps:
        stop_after(steps)
    if side == "ours":
        root = Path(__file__).resolve().parents[1]
        sys.argv = [str(root / "run.py"), *args]
        sys.path.insert(0, str(root))
        runpy.run_path(sys.argv[0], run_name="__main__")
    else:
        official(json.loads(args[0]))
    if steps:  # the script ended before its last step: say so, the parent reports it
        print(f"e2e_launch: the run ended before optimiser step {steps}", file=sys.stderr)
    finish(3 if steps else 0)


if __name__ == "__main__":
    main()
