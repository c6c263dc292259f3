"""CPU latency per image of an exported model: PyTorch eager (`uad.inference.Scorer`, what mode=predict
runs) against ONNX Runtime on the graph `mode=export` writes, batch 1, random weights and images, at each
method's paper protocol. Both include the map post-processing and the image score; neither the decoding.

    python bench/bench_export.py [method ...]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import compose_config  # noqa: E402
from uad.builders import build_encoder, build_net, build_protocol  # noqa: E402
from uad.export import export_graph  # noqa: E402
from uad.inference import Scorer  # noqa: E402

CASES = {  # method -> overrides (random encoder weights: latency does not depend on them)
    "featrec": ["method=featrec", "backbone.pretrained=false"],
    "uniad": ["method=uniad", "backbone.pretrained=false"],
    "dualad_he": ["method=dualad_he", "backbone.pretrained=false"],
    "dinomaly": ["method=dinomaly", "backbone=dinov2_vits14_reg", "backbone.pretrained=false"],
}
RUNS = 10
THREADS = 1  # both runtimes on one thread: on a shared machine more threads measure the other jobs


def _median_ms(step, image: torch.Tensor) -> float:
    step(image)  # warm-up
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        step(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(method: str, folder: Path) -> tuple[str, int, float, float, float]:
    import onnxruntime

    cfg = compose_config(CASES[method])
    protocol = build_protocol(cfg)
    net = build_net(cfg, build_encoder(cfg, protocol)).eval()
    path = folder / f"{method}.onnx"
    errors = export_graph(net, protocol, path, "onnx", check_images=2)
    scorer = Scorer(net, protocol, raw_input=True).eval()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = THREADS
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, protocol.input_size, protocol.input_size)  # (1, 3, S, S) RGB in [0, 1]
    with torch.no_grad():
        eager = _median_ms(scorer, image)
    ort = _median_ms(lambda x: session.run(None, {"image": x.numpy()}), image)
    return f"{method} / {cfg.backbone.name}", protocol.input_size, eager, ort, max(errors.values())


def main() -> None:
    torch.set_num_threads(THREADS)
    methods = sys.argv[1:] or list(CASES)
    print("## Export: CPU latency per image, PyTorch eager vs ONNX Runtime")
    print()
    print(
        f"Command: `python bench/bench_export.py` (batch 1, median of {RUNS} runs after one warm-up, "
        f"one thread for each runtime; random weights). "
        f"The machine is shared with other jobs, so absolute times vary from run to run; the ratio is the "
        f"number to read."
    )
    print()
    print("| method / backbone | input | eager ms | ONNX Runtime ms | speed-up | parity (rel.) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            name, size, eager, ort, error = measure(method, Path(tmp))
            row = f"| {name} | {size} | {eager:.1f} | {ort:.1f} | {eager / ort:.2f}x | {error:.1e} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
