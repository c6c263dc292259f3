"""Selection on the test set (UniAD / DualAD reporting): off by default and said so; when on, the tested
weights are those of the best evaluated epoch, and results.json says it was selected on the test set."""

from __future__ import annotations

import pytest

from uad import pipeline


@pytest.mark.slow
def test_default_reports_the_last_epoch_and_says_so(tiny_cfg):
    results = pipeline.run(tiny_cfg())
    assert results["run"]["selection"] == {"selected_on_test_set": False}


@pytest.mark.slow
def test_the_best_epoch_on_the_test_set_is_restored_and_reported(tiny_cfg):
    cfg = tiny_cfg("trainer.max_epochs=3", "selection.every_n_epochs=1", "selection.metric=I-AUROC")
    results = pipeline.run(cfg)
    record = results["run"]["selection"]
    assert record["selected_on_test_set"] is True and [e["epoch"] for e in record["evaluations"]] == [1, 2, 3]
    best = max(e["value"] for e in record["evaluations"])
    assert record["value"] == best
    ties = [e["epoch"] for e in record["evaluations"] if e["value"] == best]
    assert record["epoch"] == max(ties)  # the official >=: a tie goes to the later epoch
    assert results["mean"]["I-AUROC"] == pytest.approx(best, abs=1e-6)  # the test ran the selected weights


def test_bad_selection_keys_get_one_clear_error(tiny_cfg):
    with pytest.raises(ValueError, match=r"selection\.metric"):
        pipeline.run(tiny_cfg("selection.every_n_epochs=1", "selection.metric=AUPRO"))
