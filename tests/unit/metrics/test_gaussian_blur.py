"""gaussian_blur (two 1-D passes) equals one convolution with the 2-D Gaussian written from its definition."""

import math

import pytest
import torch
import torch.nn.functional as F

from uad.metrics.protocol import gaussian_blur, symmetric_pad


def gaussian_2d(sigma: float, size: int) -> torch.Tensor:
    """k(i, j) proportional to exp(-((i - c)^2 + (j - c)^2) / (2 sigma^2)), summing to 1."""
    c = (size - 1) / 2
    k = torch.tensor(
        [
            [math.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * sigma**2)) for j in range(size)]
            for i in range(size)
        ],
        dtype=torch.float64,
    )
    return k / k.sum()


@pytest.mark.parametrize("padding", ["zeros", "reflect", "symmetric"])
@pytest.mark.parametrize(("sigma", "kernel_size", "size"), [(4.0, 0, 33), (4.0, 5, 5), (1.5, 0, 13)])
def test_blur_equals_the_2d_convolution(padding: str, sigma: float, kernel_size: int, size: int) -> None:
    maps = torch.rand(2, 1, 40, 37, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pad = size // 2
    if padding == "symmetric":
        padded = symmetric_pad(maps, pad)
    else:
        padded = F.pad(maps, (pad,) * 4, mode="constant" if padding == "zeros" else "reflect")
    expected = F.conv2d(padded, gaussian_2d(sigma, size)[None, None])
    got = gaussian_blur(maps, sigma, kernel_size, padding)
    assert got.shape == maps.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert gaussian_blur(maps.float(), sigma, kernel_size, padding).dtype == torch.float32
