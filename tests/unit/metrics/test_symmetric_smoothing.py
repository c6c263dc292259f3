"""protocol.smoothing_padding=symmetric smooths as scipy.ndimage.gaussian_filter (RD4AD's, ADer's maps)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from uad.metrics.protocol import EvalProtocol, symmetric_pad
from uad.metrics.stateful import ImageMetrics


def test_symmetric_padding_repeats_the_edge_as_numpy_symmetric():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    np.testing.assert_array_equal(
        symmetric_pad(x, 2)[0, 0].numpy(), np.pad(x[0, 0].numpy(), 2, mode="symmetric")
    )


def test_the_smoothed_map_is_scipys_gaussian_filter():
    maps = torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    keys = {"name": "t", "image_size": 48, "smoothing_sigma": 4.0, "score": "max"}
    protocol = EvalProtocol.from_config({**keys, "smoothing_padding": "symmetric"})
    ours = protocol.maps_for_eval(maps).double().numpy()
    theirs = np.stack([gaussian_filter(m[0].double().numpy(), sigma=4) for m in maps])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    zeros = EvalProtocol.from_config(keys).maps_for_eval(maps).double().numpy()
    assert np.abs(zeros - theirs)[:, 0].max() > 0.1  # zero padding darkens the border: not the same


def test_map_dtype_float64_smooths_scores_and_ranks_in_float64():
    """RD4AD's test.py smooths and scores float64 maps: with map_dtype float64 ours equals scipy's to 1e-12
    (float32 smoothing rounds at ~1e-7 relative), and two scores 1e-9 apart keep their order in the image
    metrics."""
    maps = 1.6 + torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    keys = {"name": "t", "image_size": 48, "smoothing_sigma": 4.0, "score": "max"}
    keys |= {"smoothing_padding": "symmetric", "map_dtype": "float64"}
    protocol = EvalProtocol.from_config(keys)
    ours = protocol.maps_for_eval(maps)
    assert ours.dtype == torch.float64
    theirs = np.stack([gaussian_filter(m[0].numpy(), sigma=4) for m in maps])
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12, atol=0)
    scores = protocol.image_scores(ours)
    np.testing.assert_allclose(scores.numpy(), theirs.max(axis=(1, 2)), rtol=1e-12, atol=0)
    close = torch.tensor([1.688098715, 1.688098716], dtype=torch.float64)  # the same float32 value
    assert close.float()[0] == close.float()[1]
    metrics = ImageMetrics()
    metrics.update(close, torch.tensor([0, 1]), torch.arange(2))
    assert metrics.compute()["I-AUROC"] == 1.0
