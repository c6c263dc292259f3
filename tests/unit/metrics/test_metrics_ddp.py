"""The Metric classes and the Evaluator under DDP: two CPU processes (gloo) whose shards are padded with
repeated samples, as Lightning's distributed sampler pads them, give exactly the one-process numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchmetrics.metric

from bench.synthetic_maps import blob_data
from uad.callbacks.evaluation import Evaluator
from uad.metrics import EvalProtocol
from uad.metrics.stateful import AUPRO, ImageMetrics, PixelMetrics

CLASSES = ("weave", "pill")
PROTOCOL = EvalProtocol.from_config({"image_size": 32, "mask_threshold": 0.0, "score": "max"})


def dataset() -> list[dict]:
    """Two classes of 15 and 14 images (29: the sampler pads one), three views per sample (Real-IAD keys)."""
    items = []
    for c, name in enumerate(CLASSES):
        _, labels, maps, masks = blob_data(20 + c, n=15 - c, size=32, heavy=c == 1, ties=c == 0)
        for i in range(15 - c):
            items.append(
                {
                    "map": maps[i],
                    "mask": masks[i],
                    "label": int(labels[i]),
                    "class_name": name,
                    "defect": "good" if labels[i] == 0 else f"d{i % 2}",
                    "path": f"{name}/{i}.png",
                    "sample_key": f"{name}_{i // 3:04d}",
                }
            )
    return [dict(item, index=k) for k, item in enumerate(items)]


def shard(items: list[dict], rank: int, world: int) -> list[dict]:
    """DistributedSampler(shuffle=False): pad to a multiple of world by repeating the first items, then
    every world-th item starting at rank."""
    padded = items + items[: (-len(items)) % world]
    return padded[rank::world]


def batches(items: list[dict], size: int = 4):
    for start in range(0, len(items), size):
        part = items[start : start + size]
        yield (
            {
                "image": torch.zeros(len(part), 3, 32, 32),
                "mask": torch.stack([p["mask"] for p in part])[:, None].to(torch.uint8),
                "label": torch.tensor([p["label"] for p in part]),
                "index": torch.tensor([p["index"] for p in part]),
                "has_mask": torch.ones(len(part), dtype=torch.bool),
                **{k: [p[k] for p in part] for k in ("class_name", "defect", "path", "sample_key")},
            },
            torch.stack([p["map"] for p in part])[:, None],
        )


def evaluate(rank: int, world: int) -> dict:
    """Run the Metric classes and the Evaluator on this rank's shard; everything comes back to rank 0."""
    items = shard(dataset(), rank, world)
    image, pixel, aupro = ImageMetrics(), PixelMetrics(), AUPRO(bins=256)
    evaluator = Evaluator(PROTOCOL, overlays_per_class=0, print_table=False)
    trainer = SimpleNamespace(world_size=world, is_global_zero=rank == 0, loggers=[])
    for batch, maps in batches(items):
        image.update(maps.flatten(1).amax(1), batch["label"], batch["index"])
        pixel.update(maps[:, 0], batch["mask"][:, 0], batch["index"])
        aupro.update(maps[:, 0], batch["mask"][:, 0], batch["index"])
        evaluator.on_test_batch_end(trainer, None, {"maps": {"anomaly_map": maps}}, batch, 0)
    out = {**image.compute(), **pixel.compute(), "binned AUPRO": aupro.compute()}
    records = evaluator._gathered(trainer)
    if rank == 0:
        results = evaluator.evaluate(records).to_json()
        out["classes"] = results["per_class"]
        out["sample_level"] = results["extra"]["sample_level"]
        out["rows"] = len(records.index)
    return out


def _refuse(*args, **kwargs):
    raise AssertionError("gather_all_tensors used: NCCL would refuse the CPU states")


def _worker(rank: int, world: int, folder: str) -> None:
    torchmetrics.metric.gather_all_tensors = _refuse
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        out = evaluate(rank, world)
        Path(folder, f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_evaluation_equals_one_process(tmp_path):
    single = evaluate(0, 1)
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["rows"] == single["rows"] == 29  # the padded repeat was dropped
    for key, value in single.items():
        if isinstance(value, float):
            assert ranks[0][key] == ranks[1][key] == pytest.approx(value, abs=1e-12), key
    for name in CLASSES:
        for metric, value in single["classes"][name].items():
            assert ranks[0]["classes"][name][metric] == pytest.approx(value, abs=1e-12)
    assert ranks[0]["sample_level"] == single["sample_level"]
    assert all(not math.isnan(v) for v in single["sample_level"]["mean"].values())


def test_repeated_samples_are_counted_once():
    items = dataset()
    metric = ImageMetrics()
    for batch, maps in batches(items + items[:5]):  # the first five images seen twice
        metric.update(maps.flatten(1).amax(1), batch["label"], batch["index"])
    once = ImageMetrics()
    for batch, maps in batches(items):
        once.update(maps.flatten(1).amax(1), batch["label"], batch["index"])
    assert len(metric.records()["index"]) == 29
    assert metric.compute() == once.compute()


def test_pixel_states_are_compact_and_on_the_cpu():
    metric = PixelMetrics(map_dtype=torch.float16)
    for batch, maps in batches(dataset()):
        metric.update(maps[:, 0], batch["mask"][:, 0], batch["index"])
    rows = metric.records()
    assert rows["map"].dtype == torch.float16 and rows["mask"].dtype == torch.bool
    assert rows["map"].device.type == "cpu"
    with pytest.raises(ValueError, match="must both be"):
        metric.update(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9), torch.arange(2))
    with pytest.raises(RuntimeError, match="no update"):
        PixelMetrics().compute()
