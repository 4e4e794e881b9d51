"""The contract every registered feature method passes (one shared suite, a short subclass per method):
train a tiny configuration a few steps on a tiny store, checkpoint, resume, embed (shape, determinism)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from lib.features.base import MethodError
from lib.features.registry import METHODS
from lib.features.runs import (
    CHECKPOINT,
    Region,
    RunRequest,
    Session,
    create_run,
    fit,
    make_config,
    read_embedding,
    train_run,
)
from lib.storage import open_storage

TINY_NET = {"epochs": 2, "augment": {"rotation": "discrete", "z_steps": 4, "shift": 1}}
METRIC = {**TINY_NET, "shapes_per_batch": 6, "views_per_shape": 3, "width": 4, "hidden": 16, "embedding_dim": 8}


class MethodContract:
    """Subclasses set ``method`` and ``options`` (a tiny configuration for a 16^3 store)."""

    method: ClassVar[str]
    options: ClassVar[dict[str, Any]]

    def total_epochs(self) -> int:
        """The epochs a run of ``options`` trains (``epochs``; a phased method's phases summed)."""
        return METHODS[self.method].total_epochs(make_config(self.method, self.options))

    def run(self, store: str, where: Path, **extra: Any) -> tuple[Any, Any]:
        return fit(
            RunRequest(
                method=self.method, data_url=store, options={**self.options, **extra}, run_url=str(where), device="cpu"
            )
        )

    def test_train_checkpoint_embed(self, tiny_store: str, tmp_path: Path) -> None:
        ref, emb = self.run(tiny_store, tmp_path / "run")
        cls = METHODS[self.method]
        assert ref.epochs_done == self.total_epochs()
        assert open_storage(str(tmp_path / "run")).exists(CHECKPOINT)
        x, rows, attrs = read_embedding(ref.run_url, emb.name)
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape == (emb.n, emb.dim)
        assert len(rows) == len(x) == 59  # every stored item (the empty grid was refused at import)
        assert np.isfinite(x).all() and x.std(axis=0).max() > 0
        assert attrs["method"] == self.method and attrs["complete"] is True
        assert attrs["checkpoint"].endswith(CHECKPOINT)
        assert len(attrs["history"]) == ref.epochs_done
        json.dumps(attrs)  # plain JSON attributes
        if cls.trainable:
            assert all("train_seconds" in h for h in attrs["history"])

    def test_deterministic(self, tiny_store: str, tmp_path: Path) -> None:
        _, a = self.run(tiny_store, tmp_path / "a")
        _, b = self.run(tiny_store, tmp_path / "b")
        xa, xb = read_embedding(a.run_url, a.name)[0], read_embedding(b.run_url, b.name)[0]
        np.testing.assert_allclose(xa, xb, rtol=1e-5, atol=1e-6)

    def test_resume_matches_uninterrupted(self, tiny_store: str, tmp_path: Path) -> None:
        if not METHODS[self.method].trainable:
            pytest.skip("nothing to resume")
        _, whole = self.run(tiny_store, tmp_path / "whole")
        request = RunRequest(
            method=self.method, data_url=tiny_store, options=self.options, run_url=str(tmp_path / "cut"), device="cpu"
        )
        ref = create_run(request)
        first = Session(ref.run_url)  # one worker does epoch 0 and "dies"
        first.prepare(0)
        first.train(0)
        again = create_run(request)
        assert again.epochs_done == 1  # the same spec resumes
        second = Session(ref.run_url)  # another process picks it up from the checkpoint
        assert second.train(0)["epoch"] == 0  # a finished step is not redone
        s = train_run(again)
        assert s.ckpt["epochs_done"] == self.total_epochs()
        cut = s.embed()
        np.testing.assert_allclose(
            read_embedding(whole.run_url, "all")[0], read_embedding(cut.run_url, "all")[0], rtol=1e-5, atol=1e-6
        )

    def test_embed_region_and_held_out(self, tiny_store: str, tmp_path: Path) -> None:
        ref, _ = self.run(tiny_store, tmp_path / "run")
        s = Session(ref.run_url)
        assert s.spec.region.split == "train"  # auto: the store has a train split
        test = s.embed(Region(split="test"))
        assert test.n == 12 and test.name == "test"
        x_all, rows_all, _ = read_embedding(ref.run_url, "all")
        x_test, rows_test, _ = read_embedding(ref.run_url, "test")
        pos = {int(r): i for i, r in enumerate(rows_all)}
        np.testing.assert_allclose(x_test, x_all[[pos[int(r)] for r in rows_test]], rtol=1e-5, atol=1e-5)

    def test_unknown_option_lists_choices(self, tiny_store: str, tmp_path: Path) -> None:
        with pytest.raises(MethodError, match=r"options: .*seed"):
            create_run(
                RunRequest(
                    method=self.method, data_url=tiny_store, options={"no_such_option": 1}, run_url=str(tmp_path / "r")
                )
            )

    def test_negative_epochs_refused(self) -> None:
        if "epochs" in METHODS[self.method].config_cls.model_fields:
            with pytest.raises(MethodError, match="epochs"):
                make_config(self.method, {**self.options, "epochs": -1})

    def test_other_spec_refused_at_same_place(self, tiny_store: str, tmp_path: Path) -> None:
        self.run(tiny_store, tmp_path / "run")
        with pytest.raises(MethodError, match="another method"):
            create_run(
                RunRequest(
                    method=self.method,
                    data_url=tiny_store,
                    options={**self.options, "seed": 5},
                    run_url=str(tmp_path / "run"),
                )
            )

    def test_unlabelled_store(self, unlabelled_store: str, tmp_path: Path) -> None:
        cls = METHODS[self.method]
        config = cls.config_cls.model_validate(self.options)
        if cls.needs_labels(config):
            with pytest.raises(MethodError, match="needs a label"):
                create_run(
                    RunRequest(
                        method=self.method, data_url=unlabelled_store, options=self.options, run_url=str(tmp_path / "r")
                    )
                )
            assert not (tmp_path / "r" / "run.json").exists()  # refused before anything was written
        else:
            _, emb = self.run(unlabelled_store, tmp_path / "r")
            assert emb.n == 59


def test_every_registered_method_has_a_contract_subclass() -> None:
    covered = {cls.method for cls in MethodContract.__subclasses__()}
    assert covered == set(METHODS)


class TestRaw(MethodContract):
    method = "raw"
    options: ClassVar[dict[str, Any]] = {"pool": 2}


class TestVoxNet(MethodContract):
    method = "voxnet"
    options: ClassVar[dict[str, Any]] = {**TINY_NET, "batch_size": 8, "fc": 16, "vote_rotations": 2}


class TestVRN(MethodContract):
    method = "vrn"
    options: ClassVar[dict[str, Any]] = {
        **TINY_NET,
        "batch_size": 8,
        "width": 4,
        "blocks": 1,
        "vote_rotations": 1,
        "stem_stride": 1,
    }


class TestAutoencoder(MethodContract):
    method = "autoencoder"
    options: ClassVar[dict[str, Any]] = {**TINY_NET, "batch_size": 8, "latent": 16, "width": 4}


class TestDeepCluster(MethodContract):
    method = "deepcluster"
    options: ClassVar[dict[str, Any]] = {**TINY_NET, "batch_size": 8, "k": 6, "width": 4, "feature_dim": 16}


class TestTriplet(MethodContract):
    method = "triplet"
    options: ClassVar[dict[str, Any]] = METRIC


class TestSoftTriple(MethodContract):
    method = "softtriple"
    options: ClassVar[dict[str, Any]] = METRIC


class TestSimCLR(MethodContract):
    method = "simclr"
    options: ClassVar[dict[str, Any]] = {**METRIC, "views_per_shape": 2, "views": {"cutout_p": 1.0}}


class TestScan(MethodContract):
    method = "scan"
    options: ClassVar[dict[str, Any]] = {
        **METRIC,
        "views_per_shape": 2,
        "pretext_epochs": 1,
        "epochs": 1,
        "selflabel_epochs": 1,
        "k": 3,
        "neighbours": 3,
        "heads": 2,
        "scan_batch_size": 8,
        "confidence": 0.3,
    }
