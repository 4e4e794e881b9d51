"""How often a comparison reads the manifest's batch parts (``manifest/<hash>.json``): the records are read
once per evaluation and passed down, not once per question asked of them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lib.storage.local import LocalStorage
from lib.voxels.index import MANIFEST, PARTS
from tests.support import compare_raw_and_brief_autoencoder, voxelize_demo

METHODS = 2  # compare_raw_and_brief_autoencoder: raw voxels and a brief autoencoder


def test_a_comparison_of_the_demo_store_reads_the_manifest_at_most_twice_per_method(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_url = str(tmp_path / "store")
    voxelize_demo(tmp_path / "batch", store_url, "batch", seed=0, n_per_class=3)
    monkeypatch.setenv("VOXCLUST_TRAIN_WORKERS", "1")  # every step in this process, where reads are counted
    reads: Counter[str] = Counter()
    read_bytes = LocalStorage.read_bytes

    def counting(self: LocalStorage, key: str) -> bytes:
        if key == MANIFEST or key.startswith(f"{PARTS}/"):
            reads["index" if key == MANIFEST else "parts"] += 1
        return read_bytes(self, key)

    monkeypatch.setattr(LocalStorage, "read_bytes", counting)
    compare_raw_and_brief_autoencoder(store_url)
    print(f"manifest reads during the comparison: {dict(reads)}")
    assert 0 < reads["parts"] <= 2 * METHODS, dict(reads)
