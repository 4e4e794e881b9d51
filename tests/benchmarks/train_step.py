"""Training-step benchmark: samples/s of each method's training in the project's loop vs a bare PyTorch loop.

Not collected by pytest. Run:

    .venv/bin/python tests/benchmarks/train_step.py [--items 640] [--device cpu|cuda] [--threads N]

For every trained method (VoxNet, VRN, autoencoder, DeepCluster, triplet, SoftTriple) at its ``quality``
preset options, on the first ``--items`` ModelNet10 train grids:

* **project** (``--loop engine``, the default): what the ``train-epoch`` Prefect task body does, the run
  engine's ``Session(run_url).train(epoch)``: open the run in the store, load the checkpoint, the method's
  ``train_epoch`` (augmented views, loss, optimiser step, logged numbers), write the checkpoint back.
  ``--loop method`` times the method's ``train_epoch`` alone on in-memory data (no store: the GPU box has no
  zarr), i.e. the project's step code without the engine.
* **bare**: a plain loop over the *same* network modules and optimiser settings and batch size, the same
  augmentation call and the same loss (``cross_entropy``, weighted BCE, pytorch-metric-learning's losses),
  over the same number of batches: no engine, no logging, no checkpoint.

Each side runs one untimed warm-up epoch, then ``--repeats`` timed epochs alternating with the other side;
samples/s use the median. DeepCluster's re-clustering (``prepare``) is timed apart: its training step is
compared, with the pseudo-labels of the same re-clustering.

Prints one line per method to stderr and a final JSON line: ``train_<method>_ratio`` (project / bare
samples/s) and both rates per method, plus ``train_min_ratio``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402,F401  (before torch)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from lib.features.base import DataInfo, VoxelData  # noqa: E402
from lib.features.registry import get_method  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "modelnet10" / "voxels32.npz"
METHODS = ["voxnet", "vrn", "autoencoder", "deepcluster", "triplet", "softtriple"]


def quality_options(method: str) -> dict[str, Any]:
    """The ``quality`` preset's options for ``method`` (duplicated here so the GPU box needs no store code)."""
    try:
        from lib.compare.rows import PRESETS
    except ImportError:  # no zarr / boto3 (GPU box): the quality preset adds no options to these rows
        return {}
    return dict(next(e.options for e in PRESETS["quality"] if e.name == method))


def config_for(method: str, options: dict[str, Any]) -> Any:
    """The method's validated config (as ``lib.features.runs.make_config``, which needs the store code)."""
    return get_method(method).config_cls(**{**options, "epochs": 100})


def load_data(path: Path, items: int) -> VoxelData:
    z = np.load(path)
    x, y = z["X_train"], z["y_train"].astype(np.int64)
    nonempty = np.flatnonzero(x.reshape(len(x), -1).any(axis=1))
    keep = np.sort(np.random.default_rng(0).choice(nonempty, min(items, len(nonempty)), replace=False))
    return VoxelData(x[keep].astype(bool), y[keep], keep.astype(np.int64))


# -- the bare loops ------------------------------------------------------------------------------------------------
def bare_epoch(m: Any, data: VoxelData, rng: np.random.Generator, labels: np.ndarray | None = None) -> int:
    """One pass of a plain PyTorch loop over ``m``'s networks (inputs made by ``m.views``: the same
    augmentation and input scaling); returns the samples it trained on."""
    c, dev = m.config, m.device
    name = m.name
    n = len(data)
    seen = 0
    for net in m.nets.values():
        net.train(True)
    if name in ("voxnet", "vrn", "autoencoder", "deepcluster"):
        bs = c.batch_size
        y_all = torch.from_numpy(labels if labels is not None else data.labels).to(dev)
        # Classifiers train on their stratified training part (the rest is their validation split).
        part = m.split(data)[0] if name in ("voxnet", "vrn") else np.arange(n)
        order = part[rng.permutation(len(part))]
        n = len(part)
        opt = m.optimizers["model" if name != "deepcluster" else "backbone"]
        head_opt = torch.optim.SGD(m.nets["head"].parameters(), lr=c.lr) if name == "deepcluster" else None
        for i in range(0, n - n % bs, bs):
            idx = order[i : i + bs]
            x = m.views(data.grids[idx], rng)
            if name == "autoencoder":
                from lib.features.autoencoder import weighted_bce

                loss = weighted_bce(m.nets["decoder"](m.nets["encoder"](x)), (x.squeeze(1) > 0).float(), c.gamma)
            elif name == "deepcluster":
                loss = F.cross_entropy(m.nets["head"](m.nets["backbone"](x)), y_all[idx])
            else:
                loss = F.cross_entropy(m.nets["model"](x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            if head_opt is not None:
                head_opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if head_opt is not None:
                head_opt.step()
            seen += len(idx)
    else:  # triplet, softtriple (instance mode): P shapes x K views, each shape its own class
        p, k = c.shapes_per_batch, c.views_per_shape
        opt = m.optimizers["model"]
        order = rng.permutation(n)
        for i in range(0, n - n % p, p):
            idx = order[i : i + p]
            x = m.views(np.repeat(data.grids[idx], k, axis=0), rng)
            y = torch.from_numpy(np.repeat(idx, k)).to(dev)
            emb = m.nets["model"](x)
            loss = m.loss(emb, y, m.miner(emb, y)) if name == "triplet" else m.loss(emb, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    return seen


# -- the project's loop ----------------------------------------------------------------------------------------------
class EngineLoop:
    """The run engine on a local store holding ``data`` (what the train-epoch task runs)."""

    def __init__(self, method: str, options: dict[str, Any], data: VoxelData, device: str, work: Path) -> None:
        from lib.features.runs import Region, RunRequest, create_run
        from lib.voxels.importer import import_npz

        npz = work / f"{method}.npz"
        np.savez(npz, X_train=data.grids, y_train=data.labels)
        store = str(work / f"store-{method}")
        import_npz(npz, store)
        self.ref = create_run(
            RunRequest(
                method=method,
                data_url=store,
                options={**options, "epochs": 100},
                region=Region(split="train"),
                run_url=None,
                device=device,
            )
        )
        self.epoch = 0

    def prepare(self) -> float:
        from lib.features.runs import Session

        t = time.perf_counter()
        Session(self.ref.run_url).prepare(self.epoch)
        return time.perf_counter() - t

    def train(self) -> float:
        from lib.features.runs import Session

        t = time.perf_counter()
        Session(self.ref.run_url).train(self.epoch)
        self.epoch += 1
        return time.perf_counter() - t


class MethodLoop:
    """The method's own ``train_epoch`` on in-memory data (no store, no checkpoint)."""

    def __init__(self, method: str, options: dict[str, Any], data: VoxelData, device: str) -> None:
        cfg = config_for(method, options)
        info = DataInfo(data.resolution, len(data), int(data.labels.max()) + 1)
        self.m = get_method(method)(cfg, info, device)
        self.data, self.epoch, self.device = data, 0, device

    def prepare(self) -> float:
        t = time.perf_counter()
        if self.m.has_prepare:
            self.m.prepare_epoch(self.data, self.epoch, np.random.default_rng([0, self.epoch, 0]))
        return time.perf_counter() - t

    def train(self) -> float:
        t = time.perf_counter()
        self.m.train_epoch(self.data, self.epoch, np.random.default_rng([0, self.epoch, 1]))
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.epoch += 1
        return time.perf_counter() - t


def bench_method(name: str, data: VoxelData, device: str, loop: str, repeats: int, work: Path) -> dict[str, Any]:
    options = quality_options(name)
    project: Any = (
        EngineLoop(name, options, data, device, work) if loop == "engine" else MethodLoop(name, options, data, device)
    )
    # The bare loop's own instance of the same method: same networks, optimiser settings, loss objects.
    cfg = config_for(name, options)
    bare = get_method(name)(cfg, DataInfo(data.resolution, len(data), int(data.labels.max()) + 1), device)
    pseudo = None
    if name == "deepcluster":
        bare.prepare_epoch(data, 0, np.random.default_rng(0))
        pseudo = bare.assignment.numpy()  # type: ignore[attr-defined]
    rng = np.random.default_rng(1)
    prep: list[float] = []
    t_project: list[float] = []
    t_bare: list[float] = []
    for rep in range(repeats + 1):  # rep 0: warm-up, not timed
        order = ("project", "bare") if rep % 2 else ("bare", "project")
        for side in order:
            if side == "project":
                p = project.prepare() if name == "deepcluster" else 0.0
                t = project.train()
                if rep:
                    t_project.append(t)
                    prep.append(p)
            else:
                t0 = time.perf_counter()
                samples = bare_epoch(bare, data, rng, pseudo)
                if rep:
                    t_bare.append(time.perf_counter() - t0)
    # Both sides train on the same whole batches per epoch (``samples``: the classifiers' training part, P
    # shapes per step for the metric methods, whose K views per shape are not counted). The project's epoch
    # also does what a bare loop skips (the classifiers' validation pass, logged sums, the checkpoint).
    sp, sb = samples / statistics.median(t_project), samples / statistics.median(t_bare)
    out = {
        "project_samples_per_s": round(sp, 2),
        "bare_samples_per_s": round(sb, 2),
        "ratio": round(sp / sb, 3),
        "project_s": [round(t, 2) for t in t_project],
        "bare_s": [round(t, 2) for t in t_bare],
    }
    if name == "deepcluster":
        out["prepare_s"] = [round(t, 2) for t in prep]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--items", type=int, default=640, help="train grids used (a seeded sample of the non-empty ones)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--loop", choices=["engine", "method"], default="engine")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (both sides)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    data = load_data(args.data, args.items)
    figures: dict[str, Any] = {
        "train_items": len(data),
        "train_device": args.device,
        "train_threads": args.threads,
        "train_loop": args.loop,
    }
    if args.device.startswith("cuda"):
        figures["train_gpu"] = torch.cuda.get_device_name(0)
    work = Path(tempfile.mkdtemp(prefix="voxclust-train-step-"))
    ratios = []
    for name in args.methods.split(","):
        res = bench_method(name, data, args.device, args.loop, args.repeats, work)
        print(name, json.dumps(res), file=sys.stderr, flush=True)
        figures[f"train_{name}_ratio"] = res["ratio"]
        figures[f"train_{name}_project_samples_per_s"] = res["project_samples_per_s"]
        figures[f"train_{name}_bare_samples_per_s"] = res["bare_samples_per_s"]
        figures[f"train_{name}_times"] = {k: res[k] for k in ("project_s", "bare_s", "prepare_s") if k in res}
        ratios.append(res["ratio"])
    figures["train_min_ratio"] = min(ratios)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
