"""The rule that makes an official state dict reproducible from its key names and shapes alone, so that
a parity fixture holds numbers only (no weights): tests/parity/make_fixtures.py fills the official model
by this rule, the tests rebuild the same tensors from the shapes recorded in the fixture."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def seeded_tensor(index: int, key: str, shape: tuple[int, ...]) -> Tensor:
    """Tensor number `index` (the key's place in sorted order) for `key`: N(0, 1/fan_in) for matrices and
    embeddings (activations stay of order one through deep stacks), 1 + N(0, 0.02^2) for normalisation
    weights and layer scales, N(0, 0.02^2) for biases, running variances in [1, 1.1), counters 0."""
    generator = torch.Generator().manual_seed(index)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    if key.endswith("running_var"):
        return 1 + 0.1 * torch.rand(shape, generator=generator)
    noise = torch.randn(shape, generator=generator)
    if len(shape) >= 2:
        return noise / math.sqrt(math.prod(shape[1:]))
    if key.endswith(("weight", "gamma")) and not key.endswith("in_proj_weight"):
        return 1 + 0.02 * noise
    return 0.02 * noise


def seeded_state(
    shapes: dict[str, list[int]], aliases: dict[str, list[str]] | None = None
) -> dict[str, Tensor]:
    """The whole official state dict for `shapes` (key -> shape, in the model's order, which a checkpoint
    keeps), by `seeded_tensor`. `aliases` (key -> other keys) names the keys of one tensor the official
    model shares between layers: loading the seeded state leaves the last of them, `key`, in all."""
    index = {key: i for i, key in enumerate(sorted(shapes))}
    state = {key: seeded_tensor(index[key], key, tuple(shape)) for key, shape in shapes.items()}
    for key, others in (aliases or {}).items():
        state |= {other: state[key] for other in others}
    return state
