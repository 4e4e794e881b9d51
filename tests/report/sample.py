"""The hand-made report the report tests render: five methods (one supervised, one failed, one without its
scored split), hostile text, URLs of every kind, and the PNGs it names."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = '<script>alert("x")</script> CUDA out of memory & more'


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def split(nmi: float | None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ari": 0.1, "acc": 0.5, "purity": 0.55, "silhouette": 0.2, "inertia": 1234.5678}
    out.update(
        n_clusters=3, sizes=[5, 3, 2], contingency=[[4, 1, 0], [1, 2, 2]], classes=["a", "b"], clusters=[0, 1, 2]
    )
    if nmi is not None:
        out["nmi"] = nmi
    out.update(extra)
    return out


def method(name: str, kind: str, nmi: float | None, *, supervised: bool = False, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "method": kind,
        "options": {"dim": 64, "epochs": 3},
        "supervised": supervised,
        "status": "ok",
        "error": None,
        "dim": 64,
        "train_seconds": 12.34567,
        "metrics": {"test": split(nmi), "train": split(0.99)},
        "method_metrics": {},
        "elbow": [[2, 100.0], [3, 60.0], [4, 55.0]],
        "knee": 3,
        "images": {},
        "run_url": None,
        "assignments_url": None,
    }
    out.update(extra)
    return out


def sample_report() -> dict[str, Any]:
    return {
        "title": "voxclust <comparison>",
        "data_url": "s3://bucket/modelnet10",
        "created": "2026-01-02T03:04:05+00:00",
        "n_items": 10,
        "labelled": True,
        "classes": ["a", "b"],
        "k": 3,
        "scored_split": "test",
        "images": {"elbow": "elbow.png", "loss": "loss.png"},
        "methods": [
            method("raw", "raw", 0.40, images={"contingency": "raw-contingency.png", "tsne": "raw-tsne.png"}),
            method(
                "ae",
                "autoencoder",
                0.61,
                method_metrics={"reconstruction_iou": 0.8},
                images={"strips": "ae-strips.png", "pca": "ae-pca-missing.png"},
                run_url="https://prefect.example/runs/1",
                assignments_url="s3://bucket/ae/assignments.parquet",
            ),
            method("voxnet", "voxnet", 0.95, supervised=True, method_metrics={"test_accuracy": 0.9}),
            method(
                "broken",
                "deepcluster",
                None,
                status="failed",
                error=EVIL,
                metrics={},
                elbow=None,
                knee=None,
                run_url="javascript:alert(1)",
            ),
            method("train-only", "triplet", None, metrics={"train": split(0.99)}, knee=None),
        ],
    }


IMAGES = {
    "elbow.png": png((255, 0, 0)),
    "loss.png": png((0, 255, 0)),
    "raw-contingency.png": png((0, 0, 255)),
    "raw-tsne.png": png((0, 255, 255)),
    "ae-strips.png": png((255, 0, 255)),
    "unused.png": png((0, 0, 0)),
}


def rich_report() -> tuple[dict[str, Any], dict[str, bytes]]:
    """The sample report as a real comparison writes it, and its folder's files: real cluster thumbnails and
    3D previews (voxel shapes at R = 32) for raw and ae, a DeepCluster row with its history plots, two seeds
    per row (the wide table), a store of mixed captures and local and in-folder URLs."""
    import numpy as np

    from lib.report import plots
    from lib.report.previews import previews_file
    from tests.support import shapes

    rep = sample_report()
    files = dict(IMAGES)
    grids, labels = shapes(4, 0, r=32)
    for m, offset in ((rep["methods"][0], 0), (rep["methods"][1], 1)):
        members, groups = [], []
        for cluster in range(3):
            picked = np.flatnonzero(labels == (cluster + offset) % 3)[:3]
            items = [f"{m['name']}-{['box', 'ball', 'rod'][(cluster + offset) % 3]}_{i:04d}" for i in picked]
            members.append({"cluster": cluster, "size": 10 + cluster, "items": items})
            groups.append((f"{cluster} ({10 + cluster})", grids[picked]))
        m["central_members"] = members
        m["previews"] = f"{m['name']}-previews.json"
        m["images"]["strips"] = f"{m['name']}-strips.png"
        files[m["previews"]] = previews_file(
            [i for c in members for i in c["items"]], np.concatenate([g for _, g in groups])
        )
        files[m["images"]["strips"]] = plots.cluster_strips(groups, max_per_cluster=3)
    for i, m in enumerate(rep["methods"]):
        nmi = (m["metrics"].get("test") or {}).get("nmi")
        if nmi is not None:
            m["spread"] = {"seeds": [0, 1], "nmi": [nmi, nmi - 0.05], "ari": [0.1, 0.2], "acc": [0.5, 0.4]}
            m["spread"] |= {"restart_seeds": [0, 1], "restart_nmi": [nmi - 0.01, nmi + 0.01]}
        m["capture_nmi"] = 0.01 * i
    rep["methods"][0]["train_seconds"] = 0.0
    rep["methods"][1]["train_seconds"] = 72.4
    rep["methods"][0]["run_url"] = "/data/store/runs/raw-1a2b"
    rep["methods"][0]["assignments_url"] = "s3://bucket/store/reports/compare-1/clusters/raw.json"
    rep["methods"][3]["method"] = "deepcluster"
    rep["images"]["deepcluster_nmi"] = "dc-nmi.png"
    history = [{"epoch": e, "nmi_previous": 0.9 - 0.1 * e, "nmi_labels": 0.3 + 0.05 * e} for e in range(5)]
    files["dc-nmi.png"] = plots.nmi_per_epoch(history)
    histories = {"ae": [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(5)]}
    histories["broken"] = [{"epoch": e, "loss": 2.0 + 0.2 * e} for e in range(5)]
    files["loss.png"] = plots.loss_curves(histories)
    return rep, files
