"""IndexedMetric.records concatenates the per-batch states and frees each batch as it goes (memory)."""

import gc
import weakref

import torch

from uad.metrics.stateful import PixelMetrics, _cat_releasing


def test_records_frees_the_batches_and_keeps_the_rows():
    gen = torch.Generator().manual_seed(0)
    metric = PixelMetrics()
    maps = torch.rand(7, 5, 6, generator=gen, dtype=torch.float64)  # float64: the state holds its own copy
    masks = torch.rand(7, 5, 6, generator=gen) > 0.7
    for part in (slice(0, 3), slice(3, 4), slice(4, 7)):
        metric.update(maps[part], masks[part], torch.arange(7)[part])
    batches = [weakref.ref(t) for t in metric.map]
    assert len(batches) == 3
    rows = metric.records()
    gc.collect()
    assert all(ref() is None for ref in batches), "a per-batch map state outlived records()"
    assert len(metric.map) == 1 and metric.map[0] is rows["map"]
    torch.testing.assert_close(rows["map"], maps.float())
    assert torch.equal(rows["mask"], masks) and torch.equal(rows["index"], torch.arange(7))
    again = metric.records()  # a second call (compute after records) sees the same rows
    assert torch.equal(again["map"], rows["map"])


def test_cat_releasing_frees_each_chunk_while_concatenating():
    chunks = [torch.full((n, 2), float(n)) for n in (1, 3, 2)]
    expected = torch.cat(chunks)
    refs = [weakref.ref(c) for c in chunks]
    seen = []

    class Watched(list):
        def pop(self, *args):
            chunk = super().pop(*args)
            seen.append(sum(ref() is not None for ref in refs) - 1)  # chunks alive besides this one
            return chunk

    watched = Watched(chunks)
    del chunks
    out = _cat_releasing(watched)
    assert torch.equal(out, expected) and watched == []
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert seen == [2, 1, 0], seen  # the earlier chunks were gone before the later ones were copied
