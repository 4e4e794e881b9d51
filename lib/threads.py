"""How many CPU threads the numeric libraries may use in this process.

On a small machine running several trainings or Dask tasks side by side, every library (torch's intra-op
pool, faiss's OpenMP, the BLAS behind numpy / scikit-learn) starting one thread per core oversubscribes
the cores: measured on 2 cores, a torch step with 2 threads while another process is busy is much slower
than with 1. Work that shares a machine sets its share here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def cpu_share(parallel: int) -> int:
    """Threads for one of ``parallel`` jobs sharing this machine's cores (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, parallel))


@contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Run the block with at most ``n`` threads in torch, faiss and the BLAS / OpenMP pools (threadpoolctl);
    ``None`` changes nothing. The previous torch and faiss counts are restored afterwards."""
    if n is None:
        yield
        return
    import faiss  # before torch (see STACK.md)
    import torch
    from threadpoolctl import threadpool_limits

    before_torch, before_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before_torch)
        faiss.omp_set_num_threads(before_faiss)
