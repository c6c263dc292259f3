"""Record mamba_ssm's pure-PyTorch reference selective scan on fixed random inputs (numbers only).

    python tests/parity/make_scan_fixture.py --mamba-ssm /path/to/mamba_ssm-2.3.2.post1

`selective_scan_ref` of mamba-ssm 2.3.2.post1 (`mamba_ssm/ops/selective_scan_interface.py`), read from the
unpacked sdist (`pip download --no-deps --no-binary :all: mamba-ssm`; no CUDA build needed), as
make_fixtures.py reads it. Two calls: the bare scan with one B and C for all channels, and the call MambaAD's
SS2D makes (B and C per group of channels, D skip, delta bias and softplus) plus a z gate; for each, the
output and the gradients of sum(out * w) for a fixed random w. The inputs are recorded too, so the test
(tests/unit/nn/test_selective_scan.py) needs no random generator to agree with this one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.parity.make_fixtures import _reference_scan  # noqa: E402

SIZES = {"batch": 2, "groups": 2, "channels": 4, "states": 3, "length": 21}


def inputs(generator: torch.Generator, grouped: bool) -> dict[str, torch.Tensor]:
    b, g, d, n, length = SIZES.values()
    shape_bc = (b, g, n, length) if grouped else (b, n, length)

    def draw(*shape):
        return torch.randn(*shape, generator=generator)

    tensors = {
        "u": draw(b, d, length),
        "delta": draw(b, d, length) if grouped else draw(b, d, length).abs(),
        "A": -torch.exp(0.5 * draw(d, n)),
        "B": draw(*shape_bc),
        "C": draw(*shape_bc),
    }
    if grouped:
        tensors |= {"D": draw(d), "z": draw(b, d, length), "delta_bias": draw(d)}
    return tensors


def record(interface, tensors: dict[str, torch.Tensor], softplus: bool, generator: torch.Generator) -> dict:
    leaves = {k: v.clone().requires_grad_() for k, v in tensors.items()}
    out = interface.selective_scan_ref(**leaves, delta_softplus=softplus)
    weight = torch.randn(out.shape, generator=generator)
    (out * weight).sum().backward()
    return {
        "delta_softplus": softplus,
        "inputs": {k: v.tolist() for k, v in tensors.items()},
        "weight": weight.tolist(),
        "out": out.detach().tolist(),
        "grads": {k: v.grad.tolist() for k, v in leaves.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mamba-ssm", type=Path, help="unpacked mamba-ssm sdist, if not installed")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "tests" / "fixtures" / "parity" / "selective_scan.json"
    )
    args = parser.parse_args()
    _reference_scan(args.mamba_ssm)
    import mamba_ssm.ops.selective_scan_interface as interface

    generator = torch.Generator().manual_seed(0)
    fixture = {
        "source": "mamba-ssm 2.3.2.post1, mamba_ssm/ops/selective_scan_interface.py: selective_scan_ref",
        "command": " ".join(["python", *sys.argv]),
        "sizes": SIZES,
        "calls": {
            "plain": record(interface, inputs(generator, grouped=False), False, generator),
            "ss2d": record(interface, inputs(generator, grouped=True), True, generator),
        },
    }
    args.out.write_text(json.dumps(fixture) + "\n")
    print(f"{args.out}: {args.out.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
