"""Nearest neighbours by cosine similarity (exact faiss inner-product search), and the label agreement of
each item's neighbours: SCAN's diagnostic of how well an embedding suits neighbour-based clustering (the share
of an item's top-k neighbours with its own class; their tutorial reads about 0.7 as good enough)."""

from __future__ import annotations

import faiss
import numpy as np
import numpy.typing as npt

from lib.evaluation.inputs import ClusterError, _class_labels, as_features

EPS = 1e-12


def nearest_neighbours(x: npt.ArrayLike, k: int) -> npt.NDArray[np.int64]:
    """(N, k) indices of each row's ``k`` most cosine-similar other rows, most similar first."""
    f = as_features(x, min_rows=1).astype(np.float32)
    n = len(f)
    if not 1 <= k < n:
        raise ClusterError(f"{k} neighbours asked for, but only {n} items to find them among")
    f = np.ascontiguousarray(f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), EPS))
    index = faiss.IndexFlatIP(f.shape[1])
    index.add(f)
    _, found = index.search(f, k + 1)
    out = np.empty((n, k), dtype=np.int64)
    for i, row in enumerate(found):
        others = row[row != i][:k]  # itself is normally first; with duplicate rows it may not be
        out[i] = others if len(others) == k else row[:k]
    return out


def neighbour_agreement(x: npt.ArrayLike, labels: npt.ArrayLike, k: int = 20) -> float:
    """Mean share of each labelled row's ``k`` nearest neighbours (among the labelled rows) with its class."""
    f = as_features(x, min_rows=1)
    y = _class_labels(labels, len(f), "labels")
    known = y >= 0
    return label_agreement(nearest_neighbours(f[known], k), y[known])


def label_agreement(neighbours: npt.NDArray[np.int64], labels: npt.ArrayLike) -> float:
    """Mean share of each row's neighbours (``neighbours[i]``: row indices, as :func:`nearest_neighbours`
    gives them) with its label: :func:`neighbour_agreement` for neighbours already found."""
    y = np.asarray(labels)
    return float((y[neighbours] == y[:, None]).mean())
