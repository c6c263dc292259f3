"""The reports in a real browser (headless Chromium, Debian's `chromium`; .ci/run installs it): a small real
run on ../shared/realdata, a mode=predict batch on its model, and a sweep folder of four runs. Each page's
DOM after its scripts ran (--dump-dom) holds every class section, plot and gallery image, and its table
sorts; its screenshot is not blank; and the page makes no network request (Chromium's net log; a control
page that does fetch shows that the check can fail)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REALDATA
from tests.helpers.commands import run_py
from tests.helpers.report_dom import network_urls, parse
from uad import leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLASSES = {"bottle", "grid", "hazelnut_toy"}
REQUIRED = os.environ.get("UAD_REQUIRE_CHROMIUM") == "1"  # .ci/run: a missing browser fails, not skips

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None and not REQUIRED, reason="no chromium (apt-get install chromium)"),
    pytest.mark.skipif(not (REALDATA / "SOURCES.md").is_file(), reason="no ../shared/realdata"),
]


def chromium(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium on `url` with a new profile, its net log written to tmp/net.json."""
    assert CHROMIUM, "chromium is not installed: apt-get install -y chromium"
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    net_log = tmp / "net.json"
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--log-net-log={net_log}", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def page_requests(net_log: Path) -> list[str]:
    """The URLs the page asked for: net-log requests with an initiator (the browser's own update and
    account checks have none: 'not an origin')."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start and e.get("params", {}).get("initiator", "not an origin") != "not an origin"
    ]


def check_page(path: Path, tmp: Path, sort: str | None = None):
    """Dump the DOM (sorted by `sort` through the page's own script), screenshot it, and check both and
    the network; returns the DOM."""
    tmp.mkdir(parents=True, exist_ok=True)
    url = path.resolve().as_uri() + (f"#sort={sort}" if sort else "")
    dom = parse(chromium(url, tmp, "--dump-dom").stdout)
    assert page_requests(tmp / "net.json") == []
    assert network_urls(path.read_text()) == [] and "default-src 'none'" in dom.csp
    shot = tmp / "shot.png"
    chromium(path.resolve().as_uri(), tmp, f"--screenshot={shot}", "--window-size=1200,1600")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.02, "the screenshot looks blank"
    if sort:
        assert (sort, "desc") in dom.sorted_headers
    return dom


def test_the_control_page_that_fetches_is_caught(tmp_path):
    page = tmp_path / "fetching.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    chromium(page.as_uri(), tmp_path, "--dump-dom")
    assert page_requests(tmp_path / "net.json") == ["http://127.0.0.1:9/x.png"]
    assert network_urls(page.read_text()) == ['src="http://127.0.0.1:9/x.png']


def test_run_predict_and_sweep_reports_in_chromium(tmp_path):
    run = tmp_path / "run"
    real = [
        "debug=tiny",
        "callbacks=default",
        "dataset=mvtec",
        f"dataset.root={REALDATA}",
        "dataset.strict=false",
    ]
    run_py(*real, f"hydra.run.dir={run}", cwd=tmp_path)
    dom = check_page(run / "report.html", tmp_path / "run-page", sort="I-AUROC")
    assert set(dom.sections) == CLASSES
    for name, images in dom.sections.items():
        plots = {k: v for k, v in images.items() if k.startswith("plot-")}
        assert plots == {"plot-histogram": 1, "plot-roc": 1, "plot-pr": 1, "plot-pro": 1}, name
        assert images["gallery"] >= 4 and images["colour-bar"] == 1, name
    metrics = json.loads((run / "results.json").read_text())["per_class"]
    by_auroc = sorted(metrics, key=lambda c: -metrics[c]["I-AUROC"])
    assert [metrics[c]["I-AUROC"] for c in dom.first_column["metrics"]] == [
        metrics[c]["I-AUROC"] for c in by_auroc
    ]

    predicted = tmp_path / "predict"
    inputs = REALDATA / "bottle" / "test"
    run_py(
        "mode=predict",
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"predict.input={inputs}",
        f"hydra.run.dir={predicted}",
        cwd=tmp_path,
    )
    dom = check_page(predicted / "report.html", tmp_path / "predict-page")
    assert dom.images["gallery"] == len(list(inputs.rglob("*.png"))) and dom.images["plot-histogram"] >= 1

    sweep = tmp_path / "sweep"  # four run folders, as a 2x2 sweep leaves them (test_sweeps.py runs one)
    for i in range(4):
        shutil.copytree(run, sweep / f"{i}_run", ignore=shutil.ignore_patterns("checkpoints"))
    leaderboard.build_leaderboard(sweep)
    dom = check_page(sweep / "leaderboard.html", tmp_path / "sweep-page", sort="AUPRO")
    assert sorted(dom.links) == [f"{i}_run/report.html" for i in range(4)]
    assert dom.images["heatmap"] == 1 and len(dom.first_column["runs"]) == 4
