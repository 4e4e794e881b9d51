"""lib.evaluation.pca: PCA against scikit-learn on both routes (covariance, row products; LAPACK, ARPACK),
whitening, and row L2 normalisation."""

from __future__ import annotations

import warnings

import faiss  # noqa: F401  (before anything that may import torch)
import numpy as np
import numpy.typing as npt
import pytest
from sklearn.decomposition import PCA

import lib.evaluation.pca as pca_module
from lib.evaluation.inputs import ClusterError
from lib.evaluation.pca import fit_pca, l2_normalize, pca


def _correlated(n: int, d: int, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10.0, 0.1, d)  # distinct variances, so components are well defined
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * scales) @ basis.T + rng.normal(size=d) * 3


@pytest.mark.parametrize(("n", "d", "dim"), [(400, 12, 5), (30, 200, 8), (50, 200, 60)])
def test_pca_agrees_with_sklearn(n: int, d: int, dim: int) -> None:
    """Covers both routes: covariance (D <= N) and row products (D > N); dim clipped to N - 1."""
    x = (
        _correlated(n, d, seed=n + d)
        if d <= n
        else np.random.default_rng(d).normal(size=(n, d)) * np.geomspace(5, 0.5, d)
    )
    x = x.astype(np.float32).astype(np.float64)  # the PCA works on float32 input: compare on the same data
    model = fit_pca(x, dim)
    r = min(dim, d, n - 1)
    assert model.components.shape == (r, d)
    ref = PCA(n_components=r, svd_solver="full").fit(x)
    dots = np.abs(np.sum(model.components * ref.components_, axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-6)
    np.testing.assert_allclose(model.explained_variance, ref.explained_variance_, rtol=1e-8)
    z = pca(x, dim)
    assert z.dtype == np.float32 and z.shape == (n, r)
    signs = np.sign(np.sum(model.components * ref.components_, axis=1))
    np.testing.assert_allclose(z, ref.transform(x) * signs, atol=1e-4 * np.abs(z).max())


@pytest.mark.parametrize(("n", "d", "dim"), [(300, 40, 6), (60, 300, 10)])
def test_pca_arpack_route_matches_lapack_and_sklearn(monkeypatch: pytest.MonkeyPatch, n: int, d: int, dim: int) -> None:
    """Wide eigenproblems go to ARPACK; force that route on small ones and compare with the dense one."""
    rng = np.random.default_rng(n * d)
    x = (rng.normal(size=(n, d)) * np.geomspace(6, 0.3, d)).astype(np.float32).astype(np.float64)
    dense = fit_pca(x, dim)
    calls: list[int] = []
    real_eigsh = pca_module.eigsh

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real_eigsh(*args, **kwargs)

    monkeypatch.setattr(pca_module, "eigsh", spy)
    monkeypatch.setattr(pca_module, "_DENSE_EIG_MAX", 0)
    lanczos = fit_pca(x, dim)
    assert calls, "the ARPACK route was not taken"
    np.testing.assert_allclose(lanczos.explained_variance, dense.explained_variance, rtol=1e-10)
    np.testing.assert_allclose(lanczos.components, dense.components, atol=1e-8)  # same sign convention
    ref = PCA(n_components=dim, svd_solver="full").fit(x)
    np.testing.assert_allclose(lanczos.explained_variance, ref.explained_variance_, rtol=1e-8)
    # deterministic: fixed ARPACK start vector
    np.testing.assert_array_equal(fit_pca(x, dim).components, lanczos.components)


@pytest.mark.parametrize(("n", "d"), [(500, 10), (40, 300)])
def test_whitened_pca_has_identity_covariance(n: int, d: int) -> None:
    x = _correlated(n, d, seed=3) if d <= n else np.random.default_rng(4).normal(size=(n, d)) * np.geomspace(4, 1, d)
    z = pca(x, 6, whiten=True)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(6), atol=1e-3)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)


def test_pca_fit_on_one_set_transforms_another() -> None:
    x = _correlated(600, 10, seed=5)
    fit_part, other = x[:400], x[400:] + 0.5  # shifted: must be centred with the *fitted* mean
    model = fit_pca(fit_part, 4, whiten=True)
    z = model.transform(other)
    expected = (other - fit_part.mean(axis=0)) @ model.components.T / np.sqrt(model.explained_variance + 1e-5)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.transform(fit_part), pca(fit_part, 4, whiten=True), atol=1e-6)
    # transforming a single row works; wrong width is refused
    assert model.transform(other[:1]).shape == (1, 4)
    with pytest.raises(ClusterError, match="columns"):
        model.transform(other[:, :5])


def test_pca_rank_deficient_input_is_finite() -> None:
    rng = np.random.default_rng(6)
    x = np.repeat(rng.normal(size=(3, 20)), 4, axis=0)  # 12 rows, only 3 distinct: rank 2 after centring
    for whiten, eps in ((False, 1e-5), (True, 1e-5), (True, 0.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no divide-by-zero on the null directions
            z = pca(x, 8, whiten=whiten, eps=eps)
        assert z.shape == (12, 8) and np.isfinite(z).all()
        np.testing.assert_allclose(z[:, 2:], 0.0, atol=1e-5)  # directions beyond the rank project to 0


def test_pca_rejects_bad_input() -> None:
    with pytest.raises(ClusterError, match="2-D"):
        pca(np.zeros(10), 2)
    with pytest.raises(ClusterError, match="NaN"):
        pca(np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), 1)
    with pytest.raises(ClusterError, match="dim"):
        pca(np.eye(3), 0)


def test_l2_normalize_rows_and_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], atol=1e-7)


def test_whitened_model_equals_fitting_with_whitening() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6))
    x[:, 5] = x[:, 4]  # a rank-deficient direction: projects to 0 either way
    plain = fit_pca(x, 6)
    np.testing.assert_array_equal(plain.whitened(1e-5).scale, fit_pca(x, 6, whiten=True, eps=1e-5).scale)
    np.testing.assert_array_equal(plain.whitened().transform(x), fit_pca(x, 6, whiten=True).transform(x))
    assert plain.whitened().scale[-1] == 0.0
    with pytest.raises(ClusterError, match="eps"):
        plain.whitened(-1.0)
