"""bench/bench_official_e2e.py and its launcher bench/e2e_launch.py: the run-time changes made to the
official scripts are exactly the named ones, the stop after the last optimiser step ends the process there,
a new section goes above run_all's kept part, and without checkouts the script says so and exits 0."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "bench"


def load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


DINOMALY_LINES = """def train(item_list):
    batch_size = 16
    image_size = 448
    crop_size = 392
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=4,
    encoder_name = 'dinov2reg_vit_base_14'
if __name__ == '__main__':
    item_list = ['carpet', 'grid']
"""


def test_dinomaly_sizes_replace_exactly_the_literals(tmp_path: Path) -> None:
    launch = load("e2e_launch")
    (tmp_path / "dinomaly_mvtec_uni.py").write_text(DINOMALY_LINES)
    job = {
        "checkout": str(tmp_path),
        "encoder": "dinov2reg_vit_small_14",
        "image_size": 256,
        "crop_size": 224,
        "batch_size": 8,
        "workers": 0,
        "classes": ["bottle"],
    }
    text = launch.dinomaly_source(job)
    assert "    item_list = ['bottle']\n" in text
    for line in ("batch_size = 8", "image_size = 256", "crop_size = 224", "num_workers=0,", "vit_small_14'"):
        assert line in text
    (tmp_path / "dinomaly_mvtec_uni.py").write_text(DINOMALY_LINES.replace("    crop_size = 392\n", ""))
    with pytest.raises(SystemExit, match="crop_size = 392"):
        launch.dinomaly_source(job)


def test_ragged_asarray_is_the_old_object_array() -> None:
    ragged = load("e2e_launch").RaggedNumpy()
    parts = [np.zeros((3, 2)), np.ones((1, 2))]
    joined = ragged.concatenate(ragged.asarray(parts), axis=0)
    assert joined.shape == (4, 2) and joined[3].tolist() == [1.0, 1.0]
    assert ragged.asarray([[1, 2], [3, 4]]).shape == (2, 2)  # regular input: numpy itself


def test_stops_right_after_the_last_optimiser_step(tmp_path: Path) -> None:
    script = tmp_path / "steps.py"
    script.write_text(
        "import sys, torch\n"
        "p = torch.nn.Parameter(torch.zeros(1))\n"
        "opt = torch.optim.SGD([p], lr=1.0)\n"
        "for i in range(10):\n"
        "    print(i, flush=True)\n"
        "    p.grad = torch.ones(1)\n"
        "    opt.step()\n"
    )
    launcher = str(BENCH / "e2e_launch.py")
    code = (
        f"import runpy, importlib.util as u; s = u.spec_from_file_location('l', {launcher!r});"
        "m = u.module_from_spec(s); s.loader.exec_module(m); m.stop_after(3);"
        f"runpy.run_path({str(script)!r})"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "1", "2"]


def test_new_section_goes_above_the_kept_part(tmp_path: Path) -> None:
    gpu_check = load("gpu_check")
    kept = load("results_section").KEPT_LINE
    results = tmp_path / "results.md"
    results.write_text(f"# Benchmarks\n\n## A\n\na\n\n{kept}\n\n## Hand\n\nh\n")
    gpu_check.write_section(["## New", "", "n"], results, "## New")
    text = results.read_text()
    assert text.index("## A") < text.index("## New") < text.index(kept) < text.index("## Hand")
    gpu_check.write_section(["## New", "", "m"], results, "## New")
    assert results.read_text().count("## New") == 1 and "\nm\n" in results.read_text()


def test_a_section_just_above_the_kept_line_is_replaced_without_it(tmp_path: Path) -> None:
    """The KEPT line ends the section above it (it once went with it, and `make bench` would then have
    rewritten every hand-measured section); a heading that begins another heading is not that one."""
    gpu_check = load("gpu_check")
    kept = load("results_section").KEPT_LINE
    results = tmp_path / "results.md"
    results.write_text(f"# Benchmarks\n\n## E2E\n\nold\n\n{kept}\n\n## E2E: larger\n\nhand\n")
    gpu_check.write_section(["## E2E", "", "new"], results, "## E2E")
    text = results.read_text()
    assert text == f"# Benchmarks\n\n## E2E\n\nnew\n\n{kept}\n\n## E2E: larger\n\nhand\n"


def test_without_checkouts_one_line_and_exit_0(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "UAD_OFFICIAL_DIR"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_official_e2e.py"), "--results", str(tmp_path / "r.md")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Skipped: set UAD_OFFICIAL_DIR" in proc.stdout
    assert not (tmp_path / "r.md").exists()


def test_a_repeated_test_set_holds_every_test_image_and_its_mask_k_times(tmp_path: Path) -> None:
    from tests.conftest import REALDATA

    e2e = load("bench_official_e2e")
    root = e2e.repeated_test_set(REALDATA, ["bottle"], 3, tmp_path / "data")
    source = sorted((REALDATA / "bottle" / "test").glob("*/*.png"))
    images = sorted((root / "bottle" / "test").glob("*/*.png"))
    assert len(images) == 3 * len(source)
    assert (root / "bottle" / "train").resolve() == (REALDATA / "bottle" / "train").resolve()
    for image in images:
        stem, k = image.stem.rsplit("_r", 1)
        assert image.resolve() == (REALDATA / "bottle" / "test" / image.parent.name / f"{stem}.png").resolve()
        mask = root / "bottle" / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
        assert mask.exists() == (image.parent.name != "good"), mask
        assert 0 <= int(k) < 3
