"""Modality benchmark: does the same shape give the same grid, and the same group, whatever captured it?

Not collected by pytest. Run (about 2 minutes for raw voxels; each trained method adds its training):

    .venv/bin/python tests/benchmarks/modality.py --methods raw,deepcluster,autoencoder,voxnet
    .venv/bin/python tests/benchmarks/modality.py --representation binned      # as before field-v1

Figures, at 32^3 with the chosen representation (``--representation``, ``--mode``, ``--shell-width``):

* ``mesh_pcd_iou``: IoU of the grid of a shared ModelNet mesh with the grid of its 1,024-point PCD (the four
  whose cloud covers the same box as the mesh);
* ``density_iou``: a sphere, a cube and a torus, evenly sampled at 256 / 1,024 / 10,000 points, against the
  same surface sampled at 100,000 points;
* ``mixed``: one store holding the ModelNet10 test split twice, imported from ``voxels32.npz`` (binvox solid
  grids, conformed to the store) and voxelized from ``modelnet10/pcd`` through the voxelize flow; each method
  trains on the npz train split only and embeds both test copies; k-means k = 10 on their union, scored by
  NMI against the class (``nmi_class``), against the capture, npz or pcd (``nmi_modality``), and the class NMI
  of the npz test copy clustered alone (``nmi_class_single``). Labels only score.
* ``pose``: raw-voxel NMI (k = 10) of the ModelNet10 test clouds as they are (``raw_nmi_aligned``), each
  turned about z by a random angle (``raw_nmi_rotated``), and turned then voxelized with ``pose="upright"``
  (``raw_nmi_rotated_posed``);
* ``large_scan``: a 20-million-face binary PLY (a bumpy torus, written here) read and voxelized at 32^3
  and 64^3, each in a fresh process (one worker's job): ``faces``, ``r32_s``, ``r64_s``, ``peak_mb``;
* ``demo``: ``./quickstart.sh demo`` in a fresh ``git clone`` of this repository's HEAD (first setup
  included; ``--skip-demo`` leaves it null): ``wall_s``, the NMI of the best unsupervised method on all items
  (``best_nmi``) and the NMI between its clusters and the capture, mesh or point cloud (``modality_nmi``).

Prints progress to stderr and one final JSON line with exactly those keys.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402,F401  (before torch)
import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from lib.compare.rows import PRESETS  # noqa: E402
from lib.evaluation.metrics import nmi  # noqa: E402
from lib.evaluation.score import ScoreConfig, score_embedding  # noqa: E402
from lib.features.runs import Region, RunRequest, create_run, read_embedding, train_run  # noqa: E402
from lib.scans.readers import PointCloudData, read_path  # noqa: E402
from lib.scans.voxelize import VoxelConfig, voxelize  # noqa: E402
from lib.voxels.importer import import_npz  # noqa: E402
from lib.voxels.store import VoxelStore  # noqa: E402
from tests.support import MESH_PCD_PAIRS, density_shapes, offline_prefect  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]
SCORE = ScoreConfig(k=10, pca_dim=64, restarts=5, elbow_k_max=None, pic=False, spectral=False)  # k-means only


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return round(float((a & b).sum() / max((a | b).sum(), 1)), 3)


def mesh_pcd(cfg: VoxelConfig) -> dict[str, float]:
    out = {}
    for model, sub in MESH_PCD_PAIRS.items():
        mesh = read_path(DATA / "meshes" / f"{model}.off")
        cloud = read_path(DATA / "modelnet10" / "pcd" / sub / f"{model}.pcd")
        out[model] = iou(voxelize(mesh, cfg), voxelize(cloud, cfg))
    return out


def density(cfg: VoxelConfig) -> dict[str, float]:
    out = {}
    for name, m in density_shapes().items():
        dense = voxelize(PointCloudData(np.asarray(trimesh.sample.sample_surface(m, 100_000, seed=1)[0])), cfg)
        for n in (256, 1024, 10_000):
            pts = np.asarray(trimesh.sample.sample_surface_even(m, n, seed=2)[0])
            out[f"{name}@{n}"] = iou(voxelize(PointCloudData(pts), cfg), dense)
    return out


def mixed_store(cfg: VoxelConfig, work: Path) -> str:
    """The ModelNet10 test split twice (npz grids and PCD clouds) plus the npz train split, in one store."""
    from flows.runners import prefect_api
    from flows.voxelize import run_voxelize

    store_url = str(work / "mixed")
    import_npz(DATA / "modelnet10" / "voxels32.npz", store_url, classes=CLASSES, batch_name="npz", voxel=cfg)
    batch = work / "pcd"  # the test clouds in ModelNet's <class>/test/<file> layout (labels, split)
    for cls in CLASSES:
        shutil.copytree(DATA / "modelnet10" / "pcd" / cls / "test", batch / cls / "test")
    with prefect_api():
        run_voxelize(batch_url=str(batch), store_url=store_url, batch_name="pcd")
    return store_url


def embed_test(method: str, options: dict[str, Any], store_url: str, work: Path) -> tuple[np.ndarray, np.ndarray]:
    request = RunRequest(
        method=method,
        data_url=store_url,
        options=options,
        region=Region(split="train", batches=("npz",)),
        run_url=str(work / "runs" / method),
    )
    session = train_run(create_run(request), on_epoch=lambda e: print(method, e.get("epoch"), file=sys.stderr))
    emb = session.embed(Region(split="test"), name="test")
    x, rows, _ = read_embedding(emb.run_url, emb.name)
    return x, rows


def mixed(methods: list[str], store_url: str, work: Path) -> dict[str, dict[str, float]]:
    store = VoxelStore.open(store_url)
    by_row = {r.row: r for r in store.items()}
    budgets = {e.name: (e.method, dict(e.options)) for e in PRESETS["quality"]}
    out = {}
    for name in methods:
        method, options = budgets.get(name, (name, {}))
        t0 = time.perf_counter()
        x, rows = embed_test(method, options, store_url, work)
        y = np.array([by_row[int(r)].label for r in rows], np.int64)
        capture = np.array([by_row[int(r)].batch == "pcd" for r in rows], np.int64)
        labels = score_embedding(x, y, config=SCORE).kmeans.labels
        single = capture == 0
        alone = score_embedding(x[single], y[single], config=SCORE).metrics["all"]["nmi"]
        out[name] = {
            "nmi_class": round(nmi(y, labels), 3),
            "nmi_modality": round(nmi(capture, labels), 3),
            "nmi_class_single": round(float(alone), 3),
        }
        print(name, out[name], f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def pose(cfg: VoxelConfig, seed: int = 0) -> dict[str, float]:
    """Raw-voxel NMI (k = 10) of the ModelNet10 test clouds as they are, turned about z by random angles, and
    turned then brought into the ``upright`` canonical pose."""
    rng = np.random.default_rng(seed)
    clouds, labels = [], []
    for c, cls in enumerate(CLASSES):
        for f in sorted((DATA / "modelnet10" / "pcd" / cls / "test").glob("*.pcd")):
            geometry = read_path(f)
            assert isinstance(geometry, PointCloudData)
            clouds.append(geometry.points)
            labels.append(c)
    y = np.array(labels)
    angles = rng.uniform(0, 2 * np.pi, len(clouds))

    def turned(p: np.ndarray, a: float) -> np.ndarray:
        rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        return np.asarray(p @ rot.T)

    def raw_nmi(points: list[np.ndarray], c: VoxelConfig) -> float:
        x = np.stack([voxelize(PointCloudData(p), c).ravel() for p in points]).astype(np.float32)
        return round(float(score_embedding(x, y, config=SCORE).metrics["all"]["nmi"]), 3)

    rotated = [turned(p, a) for p, a in zip(clouds, angles, strict=True)]
    return {
        "raw_nmi_aligned": raw_nmi(clouds, cfg),
        "raw_nmi_rotated": raw_nmi(rotated, cfg),
        "raw_nmi_rotated_posed": raw_nmi(rotated, cfg.model_copy(update={"pose": "upright"})),
    }


def write_large_ply(path: Path, faces_wanted: int = 20_000_000) -> int:
    """A binary PLY of a bumpy torus with about ``faces_wanted`` triangles (a museum-size scan); its face count."""
    nu = int(np.sqrt(faces_wanted / 2 * 1.6))
    nv = int(faces_wanted / 2 / nu)
    u = np.linspace(0, 2 * np.pi, nu, endpoint=False)[:, None]
    v = np.linspace(0, 2 * np.pi, nv, endpoint=False)[None, :]
    tube = 0.3 + 0.02 * np.sin(7 * u) * np.cos(5 * v)
    xyz = np.stack([(1 + tube * np.cos(v)) * np.cos(u), (1 + tube * np.cos(v)) * np.sin(u), tube * np.sin(v)], -1)
    vertices = xyz.reshape(-1, 3).astype("<f4")
    i, j = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    a, b = i * nv + j, ((i + 1) % nu) * nv + j
    c, d = ((i + 1) % nu) * nv + (j + 1) % nv, i * nv + (j + 1) % nv
    tri = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    faces = np.empty(len(tri), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    faces["n"], faces["idx"] = 3, tri
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode())
        f.write(vertices.tobytes())
        f.write(faces.tobytes())
    return len(faces)


def large_scan(cfg: VoxelConfig, work: Path) -> dict[str, float]:
    """Read and voxelize a 20-million-face binary PLY in a fresh process each at 32^3 and 64^3 (what one worker
    does with one item): seconds and the larger peak resident memory."""
    import subprocess

    path = work / "large.ply"
    n_faces = write_large_ply(path)
    out: dict[str, float] = {"faces": n_faces}
    peak = 0.0
    for r in (32, 64):
        c = cfg.model_copy(update={"resolution": r})
        code = (
            "import json, resource, sys, time\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "from lib.scans.readers import read_path\nfrom lib.scans.voxelize import VoxelConfig, voxelize\n"
            f"cfg = VoxelConfig.model_validate({json.dumps(c.model_dump())})\n"
            f"t = time.perf_counter(); g = voxelize(read_path({str(path)!r}), cfg)\n"
            "print(json.dumps({'s': time.perf_counter() - t, 'kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
            " 'set': int(g.sum())}))\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        res = json.loads(done.stdout)
        out[f"r{r}_s"] = round(res["s"], 1)
        peak = max(peak, res["kb"] / 1024)
        print("large scan", r, res, file=sys.stderr, flush=True)
    out["peak_mb"] = round(peak)
    path.unlink()
    return out


def demo(work: Path) -> dict[str, float]:
    """The main job on a fresh clone, as a newcomer runs it; its report scored afterwards."""
    import csv
    import os
    import subprocess

    from lib.compare.publish import latest_report_url
    from lib.storage import open_storage

    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIRTUAL_ENV"))}
    t0 = time.perf_counter()
    done = subprocess.run(["./quickstart.sh", "demo"], cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(done.stdout[-3000:], done.stderr[-2000:], file=sys.stderr, flush=True)
    done.check_returncode()
    store_url = str(clone / "voxclust-data" / "store")
    report = open_storage(latest_report_url(store_url))
    doc = report.read_json("report.json")
    best = doc["best_method"]
    print("demo: best unsupervised method", best, file=sys.stderr, flush=True)
    row = next(m for m in doc["methods"] if m["name"] == best)
    by_source = {r.item_id: r.source for r in VoxelStore.open(store_url).items()}
    clusters, capture = [], []
    for line in csv.DictReader(io.StringIO(report.read_bytes("assignments.csv").decode())):
        clusters.append(int(line[best]))
        path = by_source[line["item_id"]].removeprefix("file://")
        capture.append(int(isinstance(read_path(path), PointCloudData)))
    return {
        "best_nmi": round(float(row["metrics"]["all"]["nmi"]), 3),
        "modality_nmi": round(nmi(np.array(capture), np.array(clusters)), 3),
        "wall_s": round(wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="raw", help="comma-separated rows of the quality preset (or methods)")
    ap.add_argument("--representation", default="field-v1", choices=["field-v1", "binned"])
    ap.add_argument("--mode", default="surface", choices=["surface", "solid"])
    ap.add_argument("--shell-width", type=float, default=1.5)
    ap.add_argument("--skip-mixed", action="store_true", help="only the grid comparisons (seconds)")
    ap.add_argument("--skip-large", action="store_true", help="no 20-million-face scan (it needs about a GB)")
    ap.add_argument("--skip-demo", action="store_true", help="no fresh-clone ./quickstart.sh demo (minutes)")
    ap.add_argument("--work", default=None, help="working folder (default: a new temporary one)")
    args = ap.parse_args()
    offline_prefect()
    cfg = VoxelConfig(resolution=32, mode=args.mode, representation=args.representation, shell_width=args.shell_width)
    work = Path(args.work or tempfile.mkdtemp(prefix="voxclust-modality-"))
    result: dict[str, Any] = {"mesh_pcd_iou": mesh_pcd(cfg), "density_iou": density(cfg)}
    print(json.dumps(result), file=sys.stderr, flush=True)
    result["mixed"] = None if args.skip_mixed else mixed(args.methods.split(","), mixed_store(cfg, work), work)
    result["pose"] = pose(cfg)
    print(json.dumps(result["pose"]), file=sys.stderr, flush=True)
    result["large_scan"] = None if args.skip_large else large_scan(cfg, work)
    result["demo"] = None if args.skip_demo else demo(work)
    print("voxel settings", json.dumps(cfg.model_dump()), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
