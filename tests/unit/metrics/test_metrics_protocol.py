"""The metric keys of the protocol: chosen by config, validated, recorded with the results."""

from __future__ import annotations

import json

import pytest
import torch

from bench.synthetic_maps import blob_data
from tests.conftest import compose_config
from uad import builders
from uad.callbacks.evaluation import Evaluator
from uad.data.transforms import InputTransform
from uad.encoders import Encoder
from uad.errors import ConfigError
from uad.inference import Scorer
from uad.methods.patchcore import PatchCore
from uad.metrics import METRIC_NAMES, EvalProtocol, compute_metrics
from uad.metrics.records import EvalRecords
from uad.results import Results, merge_results

R224 = InputTransform(224)


def test_bad_metric_keys_are_named():
    with pytest.raises(ValueError, match=r"protocol\.pixel_bins"):
        EvalProtocol(R224, pixel_bins=4)
    with pytest.raises(ValueError, match=r"protocol\.map_dtype 'int8'"):
        EvalProtocol(R224, map_dtype="int8")


@pytest.mark.parametrize("preset", ["r224", "uniad224", "dualad224", "dinomaly392", "ader256"])
def test_every_preset_is_exact_and_float32_by_default(preset):
    protocol = builders.build_protocol(compose_config([f"protocol={preset}"]))
    assert protocol.pixel_bins is None and protocol.map_dtype == "float32"


# -- the papers' reporting rules as protocol keys: AUPRO@200 beside AUPRO, UniAD's AUROC flip ---------


def test_bad_paper_rule_keys_are_named():
    with pytest.raises(ValueError, match=r"protocol\.aupro_thresholds must be null .* got 1"):
        EvalProtocol(R224, aupro_thresholds=1)
    with pytest.raises(ValueError, match=r"protocol\.aupro_thresholds .* got '200'"):
        EvalProtocol(R224, aupro_thresholds="200")
    with pytest.raises(ValueError, match=r"protocol\.aupro_fpr_rescale 'mean'"):
        EvalProtocol(R224, aupro_fpr_rescale="mean")


@pytest.mark.parametrize(
    "preset,thresholds,rescale",
    [
        ("dinomaly392", 200, "max"),
        ("dualad224", 200, "minmax"),
        ("uniad224", None, "max"),
        ("r224", None, "max"),
    ],
)
def test_the_dinomaly_and_dualad_presets_add_their_papers_aupro(preset, thresholds, rescale):
    protocol = builders.build_protocol(compose_config([f"protocol={preset}"]))
    assert (protocol.aupro_thresholds, protocol.aupro_fpr_rescale) == (thresholds, rescale)
    assert protocol.flip_auroc is False  # no preset flips: reproducing UniAD's tables is asked for


def _records() -> EvalRecords:
    """Two classes of maps as the Evaluator gathers them; class 'inverted' ranks its defects lowest."""
    parts = []
    for c, name in enumerate(("plain", "inverted")):
        scores, labels, maps, masks = blob_data(50 + c, n=8, size=32)
        sign = -1.0 if name == "inverted" else 1.0
        parts.append((sign * scores, labels, sign * maps, masks, [name] * len(labels)))
    n = sum(len(p[1]) for p in parts)
    return EvalRecords(
        index=torch.arange(n),
        score=torch.cat([p[0] for p in parts]),
        label=torch.cat([p[1] for p in parts]),
        map=torch.cat([p[2] for p in parts]),
        mask=torch.cat([p[3] for p in parts]),
        class_name=[c for p in parts for c in p[4]],
        defect=["good" if y == 0 else "blob" for p in parts for y in p[1].tolist()],
        path=[f"{i}.png" for i in range(n)],
        sample_key=[""] * n,
    )


def test_results_files_carry_aupro_at_200_and_list_the_flipped_aurocs(tmp_path):
    protocol = EvalProtocol(R224, aupro_thresholds=200, flip_auroc=True)
    records = _records()
    results = Evaluator(protocol, overlays_per_class=0, print_table=False).evaluate(records)
    results.write(tmp_path)
    results = results.to_json()
    assert results["metrics"] == [*METRIC_NAMES, "AUPRO@200"]
    sel = records.of_class("inverted")
    raw = compute_metrics(records.score[sel], records.label[sel], records.map[sel], records.mask[sel])
    assert raw["I-AUROC"] < 0.5 and raw["P-AUROC"] < 0.5
    assert results["extra"]["flipped_auroc"] == [
        {"class": "inverted", "metric": m, "raw": raw[m], "reported": pytest.approx(1 - raw[m])}
        for m in ("I-AUROC", "P-AUROC")
    ]
    assert results["per_class"]["inverted"]["I-AUROC"] == pytest.approx(1 - raw["I-AUROC"])
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["mean"]["AUPRO@200"] == pytest.approx(results["mean"]["AUPRO@200"])
    assert written["extra"]["flipped_auroc"][0]["raw"] == raw["I-AUROC"]
    assert (tmp_path / "results.csv").read_text().splitlines()[0].endswith(",AUPRO,AUPRO@200")
    assert "| AUPRO | AUPRO@200 |" in (tmp_path / "results.md").read_text()


def test_without_the_paper_rules_nothing_is_added_or_flipped():
    results = Evaluator(EvalProtocol(R224), overlays_per_class=0, print_table=False).evaluate(_records())
    assert results.metrics == list(METRIC_NAMES) and "flipped_auroc" not in results.extra
    assert results.per_class["inverted"]["I-AUROC"] < 0.5


def test_separate_runs_join_their_flipped_lists():
    flips = [{"class": c, "metric": "I-AUROC", "raw": 0.4, "reported": 0.6} for c in ("a", "b")]
    parts = [Results({c: {"I-AUROC": 0.6}}, {}, extra={"flipped_auroc": [f]}) for c, f in zip("ab", flips)]
    assert merge_results(parts).extra["flipped_auroc"] == flips


# -- the map the protocol evaluates: the network's own, or another it names ----------------------------


def test_map_name_chooses_among_the_networks_maps_and_an_unknown_name_lists_them():
    net = PatchCore(Encoder("effnet_lite0", pretrained=False, input_size=64), coreset_ratio=0.5).eval()
    with torch.no_grad():
        net.fit(net.extract(torch.randn(2, 3, 64, 64)), torch.tensor([0, 0]))
        output = net(torch.randn(2, 3, 64, 64), torch.tensor([0, 0]))
    assert sorted(output.maps()) == ["anomaly_map", "patch_map"]  # the (B, 1, h, w) ones, not "patches"
    own, patch = EvalProtocol(InputTransform(64)), EvalProtocol(InputTransform(64), map_name="patch_map")
    assert own.chosen_map(output.maps()) is output.anomaly_map
    assert patch.chosen_map(output.maps()) is output["patch_map"]
    images, classes = torch.randn(2, 3, 64, 64), torch.tensor([0, 0])
    with torch.no_grad():
        maps, _ = Scorer(net, patch)(images, classes)
        expected = patch.maps_for_eval(net(images, classes)["patch_map"])  # bilinear up to 64, no blur
        assert not torch.allclose(maps, Scorer(net, own)(images, classes)[0])
    torch.testing.assert_close(maps, expected)
    with pytest.raises(ConfigError, match=r"protocol\.map_name 'nope'.*\['anomaly_map', 'patch_map'\]"):
        EvalProtocol(InputTransform(64), map_name="nope").chosen_map(output.maps())
