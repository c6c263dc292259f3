"""The frozen-feature cache: storage (memory, disk, the RAM-budget fallback, bf16), the index-only loader,
the augmentation rule (the same metrics with and without it: tests/integration/test_feature_cache_runs.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from uad import builders
from uad.data.datamodule import build_augment
from uad.data.feature_cache import CachedTrainLoader, CachedTrainSet, FeatureCache


def _features(index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Distinct features per dataset index: a map and a token tensor, as methods extract them."""
    base = index.double()[:, None] + torch.linspace(0, 1, 12, dtype=torch.float64)[None] / 3
    return {"map": base.float().view(-1, 3, 2, 2), "tokens": base[:, :6].float().view(-1, 2, 3)}


def _fill(cache: FeatureCache, size: int) -> None:
    cache.bind(size)
    for rows in torch.arange(size).split(3):
        cache.store(rows, _features(rows), (16, 16))


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_float32_cache_gives_back_the_stored_features_exactly(mode, tmp_path):
    cache = FeatureCache(mode, dir=tmp_path)
    _fill(cache, 7)
    assert cache.full and cache.storage == mode and cache.image_size == (16, 16)
    assert cache.bytes_per_image == (12 + 6) * 4
    rows = torch.tensor([5, 0, 6])
    loaded = cache.load(rows, torch.device("cpu"))
    for name, value in _features(rows).items():
        assert torch.equal(loaded[name], value)
    cache.close()
    assert cache.summary["images"] == 7 and not list(tmp_path.iterdir())  # the disk folder is gone


def test_memory_cache_over_its_ram_budget_goes_to_disk(tmp_path, caplog):
    cache = FeatureCache("memory", ram_budget_gb=1e-9, dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        _fill(cache, 4)
    assert cache.storage == "disk" and "ram_budget_gb" in caplog.text
    assert len(list(tmp_path.iterdir())) == 1
    cache.close()


def test_bfloat16_cache_halves_the_bytes_and_restores_the_dtype():
    cache = FeatureCache("memory", dtype="bfloat16")
    _fill(cache, 5)
    assert cache.bytes_per_image == (12 + 6) * 2
    rows = torch.arange(5)
    loaded = cache.load(rows, torch.device("cpu"))
    expected = _features(rows)["map"]
    assert loaded["map"].dtype == torch.float32
    assert torch.allclose(loaded["map"], expected, rtol=2**-8)  # bf16 keeps 8 significant bits


def test_loader_gets_indices_only_once_the_cache_is_full():
    decoded = []

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict:
            decoded.append(i)
            return {"image": torch.full((3, 8, 8), float(i)), "index": i}

    cache = FeatureCache("memory")
    train_set = CachedTrainSet(Images(), cache)
    extract = lambda images: {"pooled": images.mean((2, 3))}  # noqa: E731  (B, 3)
    loader = torch.utils.data.DataLoader(train_set, batch_size=3, shuffle=True)
    for _ in range(3):  # epochs
        for batch in loader:
            features = cache.features(batch, extract)
            assert torch.equal(features["pooled"][:, 0], batch["index"].float())
    assert sorted(decoded) == [0, 1, 2, 3]  # decoded in the first epoch only
    with pytest.raises(RuntimeError, match="before it is full"):
        FeatureCache("memory").load(torch.tensor([0]), torch.device("cpu"))


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match=r"feature_cache\.mode"):
        FeatureCache("gpu")
    with pytest.raises(ValueError, match=r"feature_cache\.dtype"):
        FeatureCache("memory", dtype="float16")


def test_augment_applies_to_training_images_and_switches_the_cache_off(tiny_cfg, caplog):
    cfg = tiny_cfg("feature_cache=memory", "dataset.augment=[{_target_:albumentations.HorizontalFlip,p:1.0}]")
    protocol = builders.build_protocol(cfg)
    datamodule = builders.build_datamodule(cfg, protocol)
    datamodule.setup()
    assert datamodule.train_set.augment is not None and datamodule.test_set.augment is None
    image, _ = datamodule.train_set.resized(0)
    flipped = datamodule.train_set.transform.finish(image[:, ::-1], np.zeros(image.shape[:2], np.uint8))[0]
    assert torch.equal(datamodule.train_set[0]["image"], flipped)
    module = builders.build_module(cfg, builders.build_net(cfg, builders.build_encoder(cfg, protocol)))
    with caplog.at_level(logging.INFO):
        assert builders.attach_feature_cache(cfg, datamodule, module) is None
    assert "feature cache off: dataset.augment" in caplog.text
    assert module.feature_cache is None and datamodule.feature_cache is None


def test_a_bad_augment_entry_is_named():
    with pytest.raises(ValueError, match=r"dataset.augment\[1\].*_target_"):
        build_augment([{"_target_": "albumentations.HorizontalFlip"}, {"p": 0.5}])
    with pytest.raises(ValueError, match=r"dataset.augment\[0\] \(albumentations.NoSuchFlip\)"):
        build_augment([{"_target_": "albumentations.NoSuchFlip"}])


class _Images(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> dict:
        return {"index": index, "image": torch.full((3, 2, 2), float(index))}


def test_cached_loader_starts_no_workers_once_the_cache_is_full():
    """With workers the fill epoch runs in them; afterwards the index-only epochs run in this process and
    give the batches (same order, from the same seed) a loader with workers gives."""
    cache = FeatureCache("memory")
    train = CachedTrainSet(_Images(), cache)
    loader = CachedTrainLoader(train, batch_size=4, shuffle=True, num_workers=1)
    assert type(iter(loader)).__name__ == "_MultiProcessingDataLoaderIter"  # filling: decoding in workers
    _fill(cache, 6)
    plain = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, num_workers=1)
    torch.manual_seed(3)
    in_process = iter(loader)
    assert type(in_process).__name__ == "_SingleProcessDataLoaderIter"
    got = [b["index"].tolist() for b in in_process]
    torch.manual_seed(3)
    expected = [b["index"].tolist() for b in plain]
    assert got == expected and sorted(i for batch in got for i in batch) == list(range(6))
    assert "image" not in next(iter(loader))


def test_images_a_dropped_last_batch_left_out_are_extracted_before_the_second_epoch():
    """drop_last leaves a few images out of each epoch: they are extracted once before the second epoch, which
    then reads every batch from the cache; their features are those `extract` gives them."""
    cache = FeatureCache("memory")
    train = CachedTrainSet(_Images(), cache)
    loader = CachedTrainLoader(train, batch_size=4, shuffle=True, drop_last=True)
    extract = lambda images: {"pooled": images.mean((2, 3))}  # noqa: E731  (B, 3)
    for batch in loader:  # epoch 1: 4 of the 6 images
        cache.features(batch, extract)
    assert cache.count == 4 and not cache.full
    second = list(loader)
    assert cache.full and all("image" not in batch for batch in second)
    everything = cache.load(torch.arange(6), torch.device("cpu"))["pooled"]
    assert torch.equal(everything, torch.arange(6.0)[:, None].expand(6, 3))
    fresh = FeatureCache("memory")
    fresh.bind(6)
    fresh.fill_missing(_Images())  # nothing extracted yet: nothing to fill with, nothing done
    assert fresh.count == 0
