"""A feature-cached run trains to the same metrics as a plain one and decodes each training image once."""

from __future__ import annotations

import math

import pytest

from uad import pipeline
from uad.data import dataset as dataset_module


@pytest.mark.slow
@pytest.mark.parametrize("method", [["method=featrec"], ["method=uniad", "method.model.neighbor_size=null"]])
def test_float32_cache_trains_to_the_same_metrics_without_decoding_again(method, tiny_cfg, monkeypatch):
    """Two epochs, deterministic: the cached run matches the plain one (1e-4) and decodes each training
    image once. UniAD's feature jitter stays on the fly (it is in `reconstruct`)."""
    decoded = []
    load_image = dataset_module.load_image
    monkeypatch.setattr(dataset_module, "load_image", lambda s: decoded.append(s.path) or load_image(s))
    runs = {}
    for cache in ("none", "memory"):
        decoded.clear()
        overrides = ["trainer.max_epochs=2", "trainer.deterministic=true", f"feature_cache={cache}"]
        overrides.append("dataset.val_fraction=0")  # every training image is trained on: 18
        cfg = tiny_cfg(*method, *overrides)
        runs[cache] = (pipeline.run(cfg), len(decoded))
    (plain, plain_decoded), (cached, cached_decoded) = runs["none"], runs["memory"]
    train_images = cached["run"]["feature_cache"]["images"]
    assert train_images == 18 and cached["run"]["feature_cache"]["storage"] == "memory"
    assert plain_decoded - cached_decoded == train_images  # the second epoch read the cache
    for name, value in plain["mean"].items():
        assert math.isclose(value, cached["mean"][name], abs_tol=1e-4), name
    assert cached["run"]["throughput"]["train_images_per_s"] > 0
