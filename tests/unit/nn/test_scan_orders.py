"""Scan orders (uad.nn.scan_orders): their defining properties, and equality with MambaAD's HSCANS."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from uad.nn.scan_orders import SCANS, direction_orders, hilbert_xy, scan_order

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "mambaad.json"


def cells(order: torch.Tensor, side: int) -> list[tuple[int, int]]:
    return [(int(p) // side, int(p) % side) for p in order]


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("side", [1, 2, 4, 8])
def test_every_order_visits_every_cell_once(scan, side):
    order = scan_order(side, scan)
    assert sorted(order.tolist()) == list(range(side * side))


@pytest.mark.parametrize("scan", ["scan", "hilbert"])
def test_snake_and_hilbert_move_to_a_side_neighbour_each_step(scan):
    path = cells(scan_order(16, scan), 16)
    assert all(abs(r0 - r1) + abs(c0 - c1) == 1 for (r0, c0), (r1, c1) in pairwise(path))


def test_hilbert_curve_of_four_cells_and_its_quadrants():
    """Side 2: top-left, bottom-left, bottom-right, top-right ((x, y) = (column, row)). Side 8: each quarter
    of the curve fills one 4 x 4 quadrant, so the curve never leaves a quadrant before filling it."""
    assert [hilbert_xy(2, i) for i in range(4)] == [(0, 0), (0, 1), (1, 1), (1, 0)]
    path = cells(scan_order(8, "hilbert"), 8)
    for quarter in range(4):
        quadrants = {(r // 4, c // 4) for r, c in path[16 * quarter : 16 * (quarter + 1)]}
        assert len(quadrants) == 1


def test_zigzag_walks_the_anti_diagonals_alternately():
    assert cells(scan_order(3, "zigzag"), 3) == [
        (0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (1, 2), (2, 1), (2, 2)
    ]  # fmt: skip


def test_zorder_and_snake_and_sweep_by_hand():
    assert scan_order(4, "zorder")[:8].tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    assert scan_order(3, "scan").tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]
    assert scan_order(3, "sweep").tolist() == list(range(9))


def test_power_of_two_curves_refuse_other_sides():
    with pytest.raises(ValueError, match="power-of-two"):
        scan_order(6, "hilbert")


def test_directions_are_the_scan_of_the_map_its_transpose_rotation_and_their_reversals():
    side = 4
    x = torch.arange(side * side).view(side, side)  # the value of a cell is its flat position
    orders = direction_orders(side, "zigzag", 8)
    base = scan_order(side, "zigzag")
    views = [x, x.T, torch.rot90(x, 1, (0, 1)), torch.rot90(x, 1, (0, 1)).T]
    for k, view in enumerate(views):
        assert torch.equal(orders[k], view.flatten()[base])
        assert torch.equal(orders[k + 4], orders[k].flip(0))
    assert torch.equal(direction_orders(side, "zigzag", 4), orders[[0, 1, 4, 5]])


@pytest.mark.skipif(not FIXTURE.exists(), reason="needs tests/fixtures/parity/mambaad.json")
@pytest.mark.parametrize("scan", SCANS)
def test_equal_to_the_official_hscans(scan):
    """The official HSCANS(size, scan_type).index_flat (lewandofskee/MambaAD model/mambaad.py, recorded by
    tests/parity/make_fixtures.py --method mambaad) at sides 4 and 8."""
    official = json.loads(FIXTURE.read_text())["scan_orders"][scan]
    for side, order in official.items():
        assert scan_order(int(side), scan).tolist() == order
