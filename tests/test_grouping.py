"""Groups of filters for oni/olm (oblique.methods._grouping): Note [tall groups]."""

from __future__ import annotations

import pytest

from oblique.methods._grouping import group_sizes


@pytest.mark.parametrize(
    ("n", "p", "group_size", "center", "want"),
    [
        (4, 27, 0, True, [4]),  # wide: one group
        (16, 3, 0, True, [2] * 8),  # stem conv (16, 1, 3): centred rows live in R^2
        (16, 3, 0, False, [3, 3, 3, 3, 2, 2]),  # not centred: ≤ 3 rows
        (32, 16, 0, True, [11, 11, 10]),  # widening 1×1 shortcut (32, 16, 1)
        (10, 64, 4, True, [4, 3, 3]),  # requested groups need not divide n
        (8, 64, 2, True, [2, 2, 2, 2]),
        (5, 1, 0, True, [1] * 5),  # p = 1: never centred, one filter per group
        (3, 3, 0, True, [2, 1]),
    ],
)
def test_group_sizes(n, p, group_size, center, want):
    sizes = group_sizes(n, p, group_size, center)
    assert sizes == want
    limit = p - 1 if (center and p > 1) else p
    assert sum(sizes) == n and max(sizes) <= limit and max(sizes) - min(sizes) <= 1
