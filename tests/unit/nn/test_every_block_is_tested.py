"""Every shared block in src/uad/nn/ has its own test file here (docs/architecture.md: Tests)."""

from __future__ import annotations

from pathlib import Path

import uad.nn

NN_DIR = Path(uad.nn.__file__).parent
TESTS = Path(__file__).parent


def test_every_nn_module_has_a_test_file_named_after_it():
    modules = sorted(p.stem for p in NN_DIR.glob("*.py") if p.stem != "__init__")
    tests = {p.stem for p in TESTS.glob("test_*.py")}
    untested = [m for m in modules if f"test_{m}" not in tests and f"test_nn_{m}" not in tests]
    assert modules and not untested, f"add tests/unit/nn/test_<module>.py for {untested}"
