"""StreamingPixelMetrics: the binned pixel metrics counted batch by batch, in memory that does not grow."""

import math

import pytest
import torch

from bench.synthetic_maps import blob_data
from uad.metrics.functional import pixel_metrics, quantile_edges
from uad.metrics.stateful import StreamingPixelMetrics


def _data():
    parts = [blob_data(seed, n=12, size=40, heavy=seed == 2) for seed in range(3)]
    maps = torch.cat([p[2] for p in parts])
    masks = torch.cat([p[3] for p in parts])
    return maps, masks


def test_streaming_equals_the_binned_metrics_on_the_same_bins():
    maps, masks = _data()
    bins = 512
    edges = quantile_edges(maps.flatten(), masks.flatten(), bins)
    streaming = StreamingPixelMetrics(bins, edges=edges)
    for m, k in zip(maps.split(5), masks.split(5)):  # labelled per batch: regions never span images
        streaming.update(m, k)
    got = streaming.compute()
    expected = pixel_metrics(maps, masks, bins=bins)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_streaming_calibrated_on_the_first_batch_is_close_to_exact_and_its_state_is_fixed():
    maps, masks = _data()
    exact = pixel_metrics(maps, masks)
    streaming = StreamingPixelMetrics(1 << 12, calibration=12)
    order = torch.randperm(len(maps), generator=torch.Generator().manual_seed(0))
    sizes = []
    for rows in order.split(6):
        streaming.update(maps[rows], masks[rows])
        if streaming.pos is not None:
            sizes.append(streaming.pos.numel() + streaming.neg.numel() + streaming.pro.numel())
            assert streaming._held == []
    assert len(sizes) == 5 and len(set(sizes)) == 1  # counted from the 2nd batch on; the counts do not grow
    got = streaming.compute()
    for key, value in exact.items():
        assert got[key] == pytest.approx(value, abs=2e-2), key


def test_streaming_undefined_without_defects_and_refuses_nan():
    streaming = StreamingPixelMetrics(64)
    streaming.update(torch.rand(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.bool))  # held: compute counts it
    with pytest.warns(UserWarning):
        assert all(math.isnan(v) for v in streaming.compute().values())
    with pytest.raises(ValueError, match="NaN"):
        streaming.update(torch.full((1, 8, 8), float("nan")), torch.ones(1, 8, 8, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="no update"):
        StreamingPixelMetrics().compute()
