"""deployments/prefect.yaml: it parses, every deployment names a work pool defined once and a module-path
entry point that loads as the right Prefect flow with a parameter schema; and the pipeline flow runs a scan
batch end to end (voxelize over Dask, then compare)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from lib.scans.demo import write_demo_batch
from lib.storage import open_storage

ROOT = Path(__file__).resolve().parents[2]
FLOW_NAMES = {
    "voxelize": "voxelize-batch",
    "train": "train-features",
    "compare": "compare-methods",
    "tune": "tune",
    "pipeline": "pipeline",
    "watch-inbox": "watch-inbox",
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_every_deployment_has_a_defined_pool_and_a_loadable_flow(spec: dict[str, Any]) -> None:
    from prefect.utilities.callables import parameter_schema

    pools = {p["name"]: p for p in spec["definitions"]["work_pools"].values()}
    assert set(pools) == {"cpu", "gpu"}
    names = [d["name"] for d in spec["deployments"]]
    assert sorted(names) == sorted(FLOW_NAMES)
    for dep in spec["deployments"]:
        assert (
            dep["work_pool"] is pools[dep["work_pool"]["name"]] or dep["work_pool"] == pools[dep["work_pool"]["name"]]
        )
        module, _, attr = dep["entrypoint"].partition(":")
        assert not module.endswith(".py"), "module-path entry points only"
        flow = getattr(importlib.import_module(module), attr)
        assert flow.name == FLOW_NAMES[dep["name"]]
        schema = parameter_schema(flow).model_dump()
        assert schema["properties"], dep["name"]
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert by_name["train"]["work_pool"]["name"] == "gpu" and by_name["voxelize"]["work_pool"]["name"] == "cpu"
    (schedule,) = by_name["watch-inbox"]["schedules"]
    assert schedule["cron"] == "* * * * *" and schedule["active"] is True
    (trigger,) = by_name["watch-inbox"]["triggers"]
    assert trigger["expect"] == ["voxclust.scan-batch.arrived"]
    assert trigger["parameters"] == {"batch_url": "{{ event.payload.batch_url }}"}
    assert "schedules" not in by_name["pipeline"], "pipeline needs a batch: the watcher starts it"


def test_pipeline_voxelizes_a_batch_and_publishes_the_comparison(prefect_api: str, tmp_path: Path) -> None:
    from flows.pipeline import pipeline
    from lib.compare.rows import CompareConfig

    batch = str(tmp_path / "inbox" / "b1")
    write_demo_batch(batch, n_per_class=5, seed=0)  # one point cloud per class, the rest meshes
    store = str(tmp_path / "store")
    config = CompareConfig(k=3, tsne=False, elbow_k_max=4)
    result = pipeline(batch, store, preset="demo", methods=["raw"], config=config)
    assert result["voxelize"]["batch"] == "b1" and result["voxelize"]["stored"] == 35
    (row,) = result["compare"]["rows"]
    assert row["name"] == "raw" and row["status"] == "ok"
    assert 0.0 <= row["capture_nmi"] <= 1.0  # clusters against mesh / cloud: the store mixes both
    assert result["compare"]["scored_split"] == "all" and result["compare"]["n_items"] == 35
    html = result["compare"]["html_url"]
    assert open_storage(html.rsplit("/", 1)[0]).exists("report.html")


def test_a_later_batch_joins_the_clusters_unless_told_to_recluster(prefect_api: str, tmp_path: Path) -> None:
    from flows.pipeline import pipeline
    from lib.compare.rows import CompareConfig

    store = str(tmp_path / "store")
    config = CompareConfig(k=3, tsne=False, elbow_k_max=4, pic=False, spectral=False)
    b1, b2 = str(tmp_path / "inbox" / "b1"), str(tmp_path / "inbox" / "b2")
    write_demo_batch(b1, n_per_class=2, seed=0)
    write_demo_batch(b2, n_per_class=2, seed=1)
    first = pipeline(b1, store, preset="demo", methods=["raw"], config=config)
    second = pipeline(b2, store, preset="demo", methods=["raw"], config=config)
    assert "compare" in first and "compare" not in second
    (row,) = second["assign"]["rows"]
    assert row["method"] == "raw" and row["batches"] == "b2" and row["items"] == 14
    assert sum(int(part.split(": ")[1]) for part in row["clusters joined"].split(", ")) == 14
    again = pipeline(b2, store, preset="demo", methods=["raw"], config=config, recluster=True)
    assert again["compare"]["n_items"] == 28  # asked to: the grown store clustered anew


def test_pipeline_refuses_unknown_methods_before_any_work(prefect_api: str, tmp_path: Path) -> None:
    from flows.pipeline import pipeline
    from lib.compare.rows import CompareError

    with pytest.raises(CompareError, match="unknown method"):
        pipeline(str(tmp_path / "nothing"), str(tmp_path / "store"), methods=["kmeans"])
    assert not (tmp_path / "store").exists()
