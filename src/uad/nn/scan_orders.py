"""Orders in which a 2-D state-space block reads a square feature map, as index permutations computed once.

A scan order of an n x n grid is a LongTensor `order` of length n * n: step i of the sequence reads the cell
at row-major flat position `order[i]` (so `x.flatten(-2)[..., order]` is the sequence and the inverse
permutation puts a sequence back). MambaAD's hybrid scans (He et al., NeurIPS 2024, Sec. 3.3) are:

- `sweep`: row by row, left to right (raster);
- `scan`: row by row, odd rows right to left (a snake, "boustrophedon");
- `zorder`: the Morton curve, column bits on the even and row bits on the odd bit positions;
- `zigzag`: anti-diagonals from the top-left corner, alternately up-right and down-left (as a JPEG zig-zag);
- `hilbert`: the Hilbert curve from the top-left corner (n a power of two).

`direction_orders` turns one of them into the K directions of an SS2D block: the order applied to the map,
its transpose, its 90-degree rotation and the rotation's transpose, then each of those read backwards.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCANS = ("sweep", "scan", "zorder", "zigzag", "hilbert")
DIRECTIONS = (2, 4, 8)


def hilbert_xy(side: int, index: int) -> tuple[int, int]:
    """(x, y) = (column, row) of step `index` on the Hilbert curve of a side x side grid (side = 2^k): the
    classic iterative construction, from quadrant size 1 up, rotating the quadrants as the curve turns."""
    x = y = 0
    rest, size = index, 1
    while size < side:
        rx = 1 & (rest // 2)
        ry = 1 & (rest ^ rx)
        if ry == 0:  # lower quadrants: rotate (and reflect the right one) so that the sub-curves connect
            if rx == 1:
                x, y = size - 1 - x, size - 1 - y
            x, y = y, x
        x, y = x + size * rx, y + size * ry
        rest //= 4
        size *= 2
    return x, y


def _morton_xy(index: int) -> tuple[int, int]:
    """(column, row) of Morton index `index`: the even bits give the column, the odd bits the row."""
    x = y = 0
    for bit in range(index.bit_length()):
        if index >> bit & 1:
            if bit % 2 == 0:
                x |= 1 << (bit // 2)
            else:
                y |= 1 << (bit // 2)
    return x, y


def _zigzag_cells(side: int) -> list[tuple[int, int]]:
    """(row, column) cells along the anti-diagonals i = row + column; even i upwards, odd i downwards."""
    cells = []
    for i in range(2 * side - 1):
        low, high = max(0, i - side + 1), min(i, side - 1)
        if i % 2 == 0:
            cells += [(i - j, j) for j in range(low, high + 1)]
        else:
            cells += [(j, i - j) for j in range(low, high + 1)]
    return cells


def scan_order(side: int, scan: str) -> Tensor:
    """The (side * side,) order of `scan` (one of SCANS) on a side x side grid; see the module docstring."""
    if scan not in SCANS:
        raise ValueError(f"scan '{scan}' is not one of {SCANS}")
    n = side * side
    if scan == "sweep":
        return torch.arange(n)
    if scan == "scan":
        grid = torch.arange(n).view(side, side)
        grid[1::2] = grid[1::2].flip(-1)
        return grid.flatten()
    if scan == "zorder":
        if side & (side - 1):
            raise ValueError(f"the z-order scan needs a power-of-two grid; got {side} x {side}")
        return torch.tensor([y * side + x for x, y in map(_morton_xy, range(n))])
    if scan == "zigzag":
        return torch.tensor([r * side + c for r, c in _zigzag_cells(side)])
    if side & (side - 1):
        raise ValueError(f"the Hilbert scan needs a power-of-two grid; got {side} x {side}")
    return torch.tensor([y * side + x for x, y in (hilbert_xy(side, i) for i in range(n))])


def direction_orders(side: int, scan: str, directions: int) -> Tensor:
    """(K, side * side) orders of an SS2D block's K = `directions` (2, 4 or 8) sequences.

    Directions 0 .. K/2 - 1 read `scan` on the map, its transpose, its rotation by 90 degrees (counter-
    clockwise, torch.rot90 k=1) and the rotation's transpose, in that order, as many as K/2; directions
    K/2 .. K - 1 are the same sequences reversed.
    """
    if directions not in DIRECTIONS:
        raise ValueError(f"the number of scan directions must be one of {DIRECTIONS}; got {directions}")
    grid = torch.arange(side * side).view(side, side)
    rotated = torch.rot90(grid, 1, (0, 1))
    views = (grid, grid.T, rotated, rotated.T)[: directions // 2]
    order = scan_order(side, scan)
    forward = torch.stack([view.flatten()[order] for view in views])  # (K/2, L)
    return torch.cat([forward, forward.flip(-1)])  # (K, L)
