"""Operations end to end: `voxclust stack up` (Prefect server with basic auth and UI, SeaweedFS's S3 server, a Dask
scheduler and worker, a Prefect worker per pool), `voxclust deploy` of deployments/prefect.yaml, a demo batch
dropped into the inbox, the watch-inbox deployment (started by the `voxclust notify` event and by its own
every-minute schedule) starting the pipeline through the workers with training handed to the gpu pool, the
artifacts read back through the API, the same batch dropped again without a second run, no secret in any
log, parameter, artifact or report, and headless Chromium on the UI's pages for the run and its table."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_ports, headless_chromium
from voxclust.stack import Stack
from voxclust.stack_parts import api_get, api_post, postgres_home, postgres_missing

VOXCLUST = str(Path(sys.executable).with_name("voxclust"))

pytestmark = pytest.mark.timeout(900)


class Site:
    """A running local stack and the client environment that points at it."""

    def __init__(self, directory: Path) -> None:
        self.stack = Stack(directory)
        self.env = self.stack.env()
        self.api = self.env["PREFECT_API_URL"]
        self.auth = self.env["PREFECT_API_AUTH_STRING"]

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env}
        return subprocess.run([VOXCLUST, *args], env=env, capture_output=True, text=True, timeout=timeout)

    def get(self, path: str) -> Any:
        return api_get(self.api, path, self.auth)

    def post(self, path: str, body: Any) -> Any:
        return api_post(self.api, path, body, self.auth)

    def runs(self, deployment: str | None = None, flow: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"sort": "EXPECTED_START_TIME_ASC"}
        if deployment:
            body["deployments"] = {"name": {"any_": [deployment]}}
        if flow:
            body["flows"] = {"name": {"any_": [flow]}}
        return list(self.post("/flow_runs/filter", body))

    def started_runs(self, **kw: str) -> list[dict[str, Any]]:
        return [r for r in self.runs(**kw) if r["state_type"] not in ("SCHEDULED",)]

    def logs(self, flow_run_id: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        body: dict[str, Any] = {"limit": 200, "offset": 0, "sort": "TIMESTAMP_ASC"}
        if flow_run_id:
            body["logs"] = {"flow_run_id": {"any_": [flow_run_id]}}
        while True:
            page = self.post("/logs/filter", body)
            out.extend(page)
            if len(page) < 200:
                return out
            body["offset"] += 200

    def wait(self, what: str, check: Any, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(3)
        logs = self.stack.dir / "logs"
        tails = {p.name: p.read_text(errors="replace")[-3000:] for p in logs.glob("*.log")}
        raise AssertionError(f"timed out waiting for {what}; logs:\n{json.dumps(tails, indent=1)}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("stack")
    env = {
        **os.environ,
        "VOXCLUST_STACK_AUTH": "voxclust-admin:" + secrets.token_urlsafe(16),  # never on a command line
    }
    env.pop("PREFECT_API_URL", None)
    s3_port, *_s3_internal, prefect_port, dask_port, postgres_port = free_ports(13)  # S3 takes the 9 above it
    postgres = [] if postgres_missing() else ["--postgres", "--postgres-port", str(postgres_port)]
    up = subprocess.run(
        [
            VOXCLUST,
            "stack",
            "up",
            "--dir",
            str(directory),
            "--prefect-port",
            str(prefect_port),
            "--s3-port",
            str(s3_port),
            "--dask-port",
            str(dask_port),
            "--dask-workers",
            "1",
            "--scheduler-loop",
            "5",
            "--env",
            "VOXCLUST_PRESET=demo",
            "--env",
            "VOXCLUST_METHODS=raw,autoencoder",
            "--env",
            "VOXCLUST_SETTLE_SECONDS=5",
            "--env",
            "PREFECT_LOGGING_LEVEL=INFO",
            *postgres,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield Site(directory)
    finally:
        down = subprocess.run(
            [VOXCLUST, "stack", "down", "--dir", str(directory)], capture_output=True, text=True, timeout=120
        )
        if postgres:  # the pytest folder shuts the postgres user out: its cluster lives in ~postgres
            home = postgres_home(directory / "postgres")
            if not home.is_relative_to(directory):
                shutil.rmtree(home, ignore_errors=True)
        assert down.returncode == 0, down.stderr


def test_stack_runs_a_dropped_batch_once_through_the_deployments(site: Site, tmp_path: Path) -> None:
    # -- the stack is up: every part alive, the server healthy behind basic auth, a worker online per pool
    status = site.cli("stack", "status", "--dir", str(site.stack.dir), "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    parts = json.loads(status.stdout)["components"]
    expected = {"s3", "prefect-server", "dask-scheduler", "dask-workers", "worker-cpu", "worker-gpu"}
    if "VOXCLUST_TUNE_STORAGE" in site.env:  # PostgreSQL for tune studies, where it can be installed
        expected.add("postgres")
        import sqlalchemy

        engine = sqlalchemy.create_engine(site.env["VOXCLUST_TUNE_STORAGE"])
        with engine.connect() as db:
            assert db.execute(sqlalchemy.text("select 1")).scalar() == 1
        engine.dispose()
    assert set(parts) == expected
    assert parts["prefect-server"]["healthy"] and parts["worker-cpu"]["online"] and parts["worker-gpu"]["online"]
    with pytest.raises(OSError, match="401"):
        api_post(site.api, "/flows/filter", {}, auth=None)  # the API refuses anonymous callers

    # -- deploy deployments/prefect.yaml
    deployed = site.cli("deploy", timeout=300)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    deployments = {d["name"]: d for d in site.post("/deployments/filter", {})}
    assert set(deployments) == {"voxelize", "train", "compare", "tune", "pipeline", "watch-inbox"}
    assert deployments["train"]["work_pool_name"] == "gpu" and deployments["pipeline"]["work_pool_name"] == "cpu"

    # -- drop a demo batch into the inbox and announce it; the every-minute schedule runs watchers too
    inbox = site.env["VOXCLUST_INBOX_URL"]
    dropped = site.cli("demo-batch", "--out", f"{inbox}/b1", "--n-per-class", "2")
    assert dropped.returncode == 0, dropped.stderr
    notified = site.cli("notify", f"{inbox}/b1", "--json")
    assert notified.returncode == 0, notified.stderr
    assert json.loads(notified.stdout)["batch"] == "b1"

    def pipeline_done() -> dict[str, Any] | None:
        runs = site.started_runs(deployment="pipeline")
        assert all(r["state_type"] not in ("FAILED", "CRASHED") for r in runs), runs
        return runs[0] if runs and runs[0]["state_type"] == "COMPLETED" else None

    pipeline = site.wait("the pipeline run", pipeline_done, 480)
    assert pipeline["name"].startswith("pipeline-b1-")
    assert pipeline["parameters"]["batch_url"] == f"{inbox}/b1"
    watchers = site.started_runs(deployment="watch-inbox")
    assert any(w["parameters"].get("batch_url") == f"{inbox}/b1" for w in watchers), "the event started a watcher"

    # training went to the gpu pool as flow runs of the train deployment
    trains = site.runs(deployment="train")
    assert sorted(r["name"] for r in trains) == ["train-autoencoder", "train-raw"]
    assert all(r["state_type"] == "COMPLETED" and r["work_pool_name"] == "gpu" for r in trains)

    # -- artifacts read back through the API
    tables = site.post("/artifacts/filter", {"artifacts": {"key": {"any_": ["voxclust-pipeline-table"]}}})
    assert len(tables) == 1 and tables[0]["flow_run_id"] == pipeline["id"]
    rows = tables[0]["data"] if isinstance(tables[0]["data"], list) else json.loads(tables[0]["data"])
    assert {r["name"] for r in rows} == {"raw", "autoencoder"}
    assert all(r["status"] == "ok" and 0 <= r["nmi"] <= 1 for r in rows)
    (compare_table,) = site.post("/artifacts/filter", {"artifacts": {"key": {"any_": ["voxclust-compare-table"]}}})
    link = site.post("/artifacts/filter", {"artifacts": {"key": {"any_": ["voxclust-compare-report"]}}})
    assert compare_table["flow_run_id"] != pipeline["id"] and link and "report.html" in link[0]["data"]

    # -- the same batch dropped again: the event's watcher and the next scheduled one start nothing
    redropped_at = time.time()
    again = site.cli("demo-batch", "--out", f"{inbox}/b1", "--n-per-class", "2")
    assert again.returncode == 0, again.stderr
    assert site.cli("notify", f"{inbox}/b1").returncode == 0

    def later_watchers_done() -> list[dict[str, Any]] | None:
        later = [
            w
            for w in site.started_runs(deployment="watch-inbox")
            if w["start_time"] and _ts(w["start_time"]) > redropped_at + 6  # after the batch settled
        ]
        events = [w for w in later if w["parameters"].get("batch_url")]
        scheduled = [w for w in later if not w["parameters"].get("batch_url")]
        done = [w for w in events + scheduled if w["state_type"] == "COMPLETED"]
        ok = any(w in done for w in events) and any(w in done for w in scheduled)
        return done if ok else None

    for w in site.wait("watchers after the second drop", later_watchers_done, 240):
        # logs reach the API in batches, possibly after the run's final state
        site.wait(
            f"the log of watcher {w['name']}",
            lambda w=w: any("b1: already processed" in log["message"] for log in site.logs(w["id"])),
            60,
        )
    # one more watch, ad hoc from the command line, agrees
    watched = site.cli("watch", "--json")
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout) == {"started": [], "skipped": {"b1": "already processed"}}
    assert len(site.started_runs(deployment="pipeline")) == 1, "the same batch ran twice"

    # -- no secret anywhere: logs, flow-run parameters, deployments, artifacts, the report files
    secret_values = [site.env["AWS_SECRET_ACCESS_KEY"], site.auth, site.auth.split(":", 1)[1]]
    haystacks = {
        "logs": json.dumps(site.logs()),
        "flow runs": json.dumps(site.runs()),
        "deployments": json.dumps(site.post("/deployments/filter", {})),
        "artifacts": json.dumps(site.post("/artifacts/filter", {})),
    }
    report_dir = json.loads(_s3_read(site, f"{site.env['VOXCLUST_STORE_URL']}/reports/latest.json"))["url"]
    for name in ("report.json", "report.html", "assignments.csv"):
        haystacks[name] = _s3_read(site, f"{report_dir.rstrip('/')}/{name}")
    for where, text in haystacks.items():
        for value in secret_values:
            assert value not in text, f"a secret appears in {where}"

    # -- an ad hoc run reporting to this lasting server: the CLI links to its page in the UI
    adhoc = site.cli("voxelize", f"{inbox}/b1", "--store", str(tmp_path / "adhoc"), "--workers", "1")
    assert adhoc.returncode == 0, adhoc.stderr[-3000:]
    (line,) = [ln for ln in adhoc.stdout.splitlines() if ln.startswith("Prefect UI: ")]
    run_id = line.rsplit("/", 1)[1]
    assert line.startswith(f"Prefect UI: {site.api.removesuffix('/api')}/runs/flow-run/"), line
    assert site.get(f"/flow_runs/{run_id}")["state_type"] == "COMPLETED"
    assert "View at" not in adhoc.stderr and "| INFO" not in adhoc.stderr  # quiet: records only with --verbose

    # -- the UI in headless Chromium (skipped without one, unless VOXCLUST_REQUIRE_BROWSER): the run's page, then
    # its comparison table
    _browser_check(site, pipeline, tmp_path)


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _s3_read(site: Site, url: str) -> str:
    from lib.storage import S3Settings, S3Storage

    bucket, _, key = url.removeprefix("s3://").partition("/")
    settings = S3Settings(
        endpoint_url=site.env["AWS_ENDPOINT_URL"],
        access_key_id=site.env["AWS_ACCESS_KEY_ID"],
        secret_access_key=site.env["AWS_SECRET_ACCESS_KEY"],
        region=site.env["AWS_DEFAULT_REGION"],
    )
    return S3Storage(bucket, "", settings).read_bytes(key).decode("utf-8", errors="replace")


def _browser_check(site: Site, pipeline: dict[str, Any], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    out = tmp_path / "screenshots"
    out.mkdir()
    ui = site.api.removesuffix("/api")
    with headless_chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        # the UI asks for the server's basic-auth string once and keeps it for its API calls
        page.goto(f"{ui}/v2/login")
        password = page.locator("input").first
        password.fill(site.auth)
        password.press("Enter")
        page.wait_for_url("**/dashboard**")
        page.goto(f"{ui}/runs/flow-run/{pipeline['id']}")
        expect(page.get_by_text(pipeline["name"]).first).to_be_visible()
        expect(page.get_by_text("Completed").first).to_be_visible()
        page.screenshot(path=str(out / "flow-run.png"))

        page.get_by_text("Artifacts", exact=True).first.click()
        card = page.get_by_text("voxclust-pipeline-table").first
        expect(card).to_be_visible()
        page.screenshot(path=str(out / "flow-run-artifacts.png"))
        card.click()
        expect(page.get_by_text("autoencoder", exact=True).first).to_be_visible()
        expect(page.get_by_text("nmi", exact=True).first).to_be_visible()
        page.screenshot(path=str(out / "comparison-table.png"), full_page=True)
    for name in ("flow-run.png", "flow-run-artifacts.png", "comparison-table.png"):
        assert (out / name).stat().st_size > 10_000, name
    keep = os.environ.get("VOXCLUST_SCREENSHOTS")
    if keep:
        shutil.copytree(out, keep, dirs_exist_ok=True)
