"""lib.evaluation.neighbours: cosine nearest neighbours against a brute-force search, and their label agreement."""

from __future__ import annotations

import numpy as np
import pytest

from lib.evaluation.inputs import ClusterError
from lib.evaluation.neighbours import label_agreement, nearest_neighbours, neighbour_agreement


def test_nearest_neighbours_match_a_brute_force_search() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    got = nearest_neighbours(x, 10)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    want = np.argsort(-sim, axis=1, kind="stable")[:, :10]
    assert got.shape == (200, 10) and not (got == np.arange(200)[:, None]).any()  # never itself
    assert np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)]) > 0.99  # float ties aside
    np.testing.assert_array_equal(got[:, 0], want[:, 0])
    dup = np.vstack([x[:5], x[:5]])  # duplicates: each row's twin is its nearest other row
    assert set(nearest_neighbours(dup, 1)[:5, 0]) == {5, 6, 7, 8, 9}
    with pytest.raises(ClusterError, match="only 5 items"):
        nearest_neighbours(x[:5], 5)


def test_neighbour_agreement() -> None:
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 30)
    apart = np.eye(3)[y] * 10 + rng.normal(size=(90, 3)) * 0.1
    assert neighbour_agreement(apart, y, k=5) == 1.0
    noise = rng.normal(size=(90, 8))
    assert neighbour_agreement(noise, y, k=5) < 0.6
    unknown = y.copy()
    unknown[:30] = -1  # unlabelled rows take no part
    assert neighbour_agreement(apart, unknown, k=5) == 1.0
    # of neighbours already found (SCAN logs it for the neighbours it mined): the same number
    nb = nearest_neighbours(noise, 5)
    assert label_agreement(nb, y) == neighbour_agreement(noise, y, k=5) == float((y[nb] == y[:, None]).mean())
