"""lib.threads: one share of the cores per parallel job, for torch, faiss and the BLAS/OpenMP pools."""

from __future__ import annotations

import os

import faiss  # before torch
import pytest
import torch
from threadpoolctl import threadpool_info

from lib.threads import cpu_share, limit_threads


def test_limit_threads_sets_every_pool_and_restores_them() -> None:
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
        assert faiss.omp_get_max_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
    with limit_threads(None):  # no limit: nothing changes
        assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before


def test_limit_threads_restores_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), limit_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_cpu_share() -> None:
    cores = os.cpu_count() or 1
    assert cpu_share(1) == cores
    assert cpu_share(cores) == 1
    assert cpu_share(cores * 4) == 1  # never zero
    assert cpu_share(0) == cores
