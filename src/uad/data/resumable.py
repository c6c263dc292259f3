"""A shuffling training loader that a checkpoint taken mid-epoch (an interrupted run) resumes exactly: the
rest of the same epoch, in the same order, then the epochs an uninterrupted run would have seen.

The order of an epoch comes from one draw of torch's global generator when the epoch starts (as
`RandomSampler` does, so an uninterrupted run shuffles exactly as with a plain `DataLoader`). The draw and
the number of batches trained on go into the checkpoint (Lightning calls `state_dict` on a loader that has
one, and `load_state_dict` before an unfinished epoch resumes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


class EpochSampler(RandomSampler):
    """A random order per epoch from a remembered seed; `resume(seed, skip)` replays an epoch from `skip`.
    A `RandomSampler`, so that Lightning knows the loader shuffles (its DDP sampler then shuffles too)."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset)  # type: ignore[arg-type]
        self.size = len(dataset)  # type: ignore[arg-type]
        self.seed: int | None = None
        self._resume: tuple[int, int] | None = None

    def resume(self, seed: int, skip: int) -> None:
        self._resume = (seed, skip)

    def __iter__(self) -> Iterator[int]:
        if self._resume is not None:
            self.seed, skip = self._resume
            self._resume = None
        else:
            self.seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        yield from torch.randperm(self.size, generator=generator).tolist()[skip:]

    def __len__(self) -> int:
        return self.size


class ResumableLoader(DataLoader):
    """A `DataLoader(shuffle=True)` whose place in the epoch is saved with the checkpoint. `consumed` is the
    number of batches trained on in this epoch, set by `uad.callbacks.interrupt.Interruption` after each
    batch (the loader itself runs a batch ahead of training: Lightning prefetches)."""

    def __init__(self, dataset: Dataset, shuffle: bool = True, sampler: Any = None, **kwargs: Any) -> None:
        if shuffle and sampler is None:
            sampler = EpochSampler(dataset)
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.consumed = 0
        self._resuming = False

    def state_dict(self) -> dict[str, Any]:
        seed = getattr(self.sampler, "seed", None)
        return {"seed": seed, "batches": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self.sampler, EpochSampler) and state.get("seed") is not None:
            self.sampler.resume(int(state["seed"]), int(state["batches"]) * int(self.batch_size or 1))
            self.consumed = int(state["batches"])
            self._resuming = True

    def __iter__(self) -> Iterator[Any]:
        if not self._resuming:
            self.consumed = 0
            return super().__iter__()
        self._resuming = False
        rng = torch.get_rng_state()  # creating the iterator draws a worker seed; the run it resumes did not
        iterator = super().__iter__()
        torch.set_rng_state(rng)
        return iterator
