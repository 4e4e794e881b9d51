"""infra/: the container images, the compose stack and the cluster manifests carry what operations rely on.

Dockerfiles are read line by line (continuations joined, stages split at FROM); YAML and JSON files go
through the standard parsers. Nothing is built or started: `docker compose config` runs only where a
compose plugin is installed, and skips otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKER = INFRA / "docker"
K8S = INFRA / "k8s"
COMPOSE = INFRA / "compose.yaml"

IMAGES = {"Dockerfile": "cpu", "Dockerfile.cuda": "gpu"}
TORCH_INDEX = {
    "Dockerfile": "https://download.pytorch.org/whl/cpu",
    "Dockerfile.cuda": "https://download.pytorch.org/whl/cu128",
}
SERVICES = {"prefect-server", "minio", "minio-setup", "dask-scheduler", "dask-worker", "worker-cpu", "worker-gpu"}
DASK_CONFIG = "/opt/voxclust/infra/dask"

# An environment variable whose name says it holds a secret.
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|PASSWD|TOKEN|AUTH|CREDENTIAL", re.IGNORECASE)
# `${VAR}`, `${VAR:?message}` or `${VAR?message}`: a reference with no literal default.
SECRET_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
TORCH_SPEC = re.compile(r"\btorch\s*(==|>=|<=|~=|!=|<|>|@)")


# ---------------------------------------------------------------------------------------------------------
# Dockerfiles


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def read_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its (KEYWORD, arguments) in order."""
    logical: list[str] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue  # comments (also inside continuations) and blank lines
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, f"{path.name}: dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(image=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args))
        elif keyword == "ARG":
            key, _, default = args.partition("=")
            global_args[key] = default
    assert stages, f"{path.name}: no FROM"
    return global_args, stages


def arg_defaults(stage: Stage) -> dict[str, str]:
    out = {}
    for args in stage.all("ARG"):
        key, _, default = args.partition("=")
        out[key.strip()] = default.strip().strip('"')
    return out


def env_of(stage: Stage) -> dict[str, str]:
    out = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {args!r}: use the KEY=value form"
            out[key] = value
    return out


def copy_sources(stage: Stage, before: str | None = None) -> set[str]:
    """What the stage COPYs from the build context (not --from), optionally only before an instruction
    whose text contains ``before``."""
    sources: set[str] = set()
    for keyword, args in stage.instructions:
        if before is not None and before in args:
            break
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources.update(p.rstrip("/").removeprefix("./") for p in paths[:-1])
    return sources


def pip_installs(stage: Stage) -> list[list[str]]:
    """Every `pip install ...` command of the stage's RUN instructions, as argument lists."""
    out = []
    for args in stage.all("RUN"):
        command: list[str] = []
        for word in [*shlex.split(args), "&&"]:
            if word not in ("&&", "||", ";"):
                command.append(word)
                continue
            if "pip" in command and command[command.index("pip") + 1 : command.index("pip") + 2] == ["install"]:
                out.append(command[command.index("pip") :])
            command = []
    return out


def is_pinned(ref: str) -> bool:
    """An image reference with an explicit tag other than `latest`, or a digest."""
    if "@sha256:" in ref:
        return True
    last = ref.rsplit("/", 1)[-1]
    name, sep, tag = last.partition(":")
    return bool(name and sep and tag and tag != "latest" and "$" not in tag)


def packages() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*").rstrip(".") for pattern in include})


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus `**`: `*` and `?` stop at `/`)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            j = pattern.index("]", i)
            out, i = out + pattern[i : j + 1], j + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (or a folder above it) out of the build context."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = dockerignore_regex(raw.removeprefix("!").strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negate
    return result


@pytest.fixture(params=sorted(IMAGES), scope="module")
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, dict[str, str], list[Stage]]:
    name: str = request.param
    global_args, stages = read_dockerfile(DOCKER / name)
    return name, global_args, stages


def test_dockerfile_bases_are_pinned(dockerfile: tuple[str, dict[str, str], list[Stage]]) -> None:
    name, _, stages = dockerfile
    stage_names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in stage_names:
            continue
        assert is_pinned(stage.image), f"{name}: FROM {stage.image} needs a fixed tag"
        for args in stage.all("COPY"):
            for word in shlex.split(args):
                if word.startswith("--from="):
                    ref = word.removeprefix("--from=")
                    assert ref in stage_names or is_pinned(ref), f"{name}: COPY --from={ref} needs a fixed tag"
    final = stages[-1].image
    if name == "Dockerfile":
        assert final.startswith("python:3.11-slim"), final
    else:
        assert final.startswith("nvidia/cuda:12.") and final.endswith("-ubuntu22.04"), final


def test_dockerfile_installs_the_project_with_the_constraints_and_torch_index(
    dockerfile: tuple[str, dict[str, str], list[Stage]],
) -> None:
    name, _, stages = dockerfile
    installs = [(stage, words) for stage in stages for words in pip_installs(stage)]
    project = [(stage, words) for stage, words in installs if any(w == "." or w.startswith(".[") for w in words)]
    assert len(project) == 1, f"{name}: one `pip install ... .` of the project, found {len(project)}"
    stage, words = project[0]
    assert "constraints.txt" in [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-c", "--constraint")], (
        f"{name}: the project must install with -c constraints.txt: {words}"
    )
    index = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--extra-index-url"]
    assert index in (["${TORCH_INDEX}"], ["$TORCH_INDEX"]), f"{name}: torch comes via --extra-index-url $TORCH_INDEX"
    assert arg_defaults(stage).get("TORCH_INDEX") == TORCH_INDEX[name]

    # torch is pinned by the project alone: no RUN names a torch version of its own.
    for st in stages:
        for args in st.all("RUN"):
            assert not TORCH_SPEC.search(args), f"{name}: torch must come from pyproject's pin, not {args!r}"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d for d in dependencies if re.match(r"torch\b", d)] == ["torch==2.13.0"]
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().splitlines()


def test_the_cuda_image_replaces_faiss_cpu_with_faiss_gpu_and_checks_its_gpu_api() -> None:
    _, stages = read_dockerfile(ROOT / "infra" / "docker" / "Dockerfile.cuda")
    installs = [words for stage in stages for words in pip_installs(stage)]
    assert any(".[gpu]" in words for words in installs), "the CUDA image installs the project's gpu extra"
    assert installs[-1][-1] == "faiss-gpu" and "--no-deps" in installs[-1], "faiss-gpu installed last, alone"
    runs = " ".join(args for stage in stages for args in stage.all("RUN"))
    assert "pip uninstall -y faiss-cpu" in runs and "StandardGpuResources" in runs
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    cpu = next(p for p in pins if p.startswith("faiss-cpu=="))
    assert extras["gpu"] == [cpu.replace("cpu", "gpu")] and cpu.replace("cpu", "gpu") in pins  # same faiss version


def test_dockerfile_copies_every_package_before_installing(
    dockerfile: tuple[str, dict[str, str], list[Stage]],
) -> None:
    name, _, stages = dockerfile
    (builder,) = [s for s in stages if any(w == "." or w.startswith(".[") for ws in pip_installs(s) for w in ws)]
    needed = {"pyproject.toml", "constraints.txt", "README.md", *packages()}
    copied = copy_sources(builder, before="pip install")
    assert needed <= copied, f"{name}: copy {sorted(needed - copied)} before `pip install`"

    final = stages[-1]
    assert final.all("WORKDIR")[-1] == "/opt/voxclust"
    in_image = copy_sources(final)
    # deployments/ for `prefect deploy` from /opt/voxclust, infra/dask for DASK_CONFIG of the Dask services.
    assert {*packages(), "deployments", "infra/dask"} <= in_image, f"{name}: {sorted(in_image)}"

    patterns = dockerignore()
    for source in copy_sources(builder) | in_image:
        assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path"
        assert not ignored(source, patterns), f"{name}: COPY {source} is excluded by .dockerignore"


def test_dockerfile_runs_as_a_non_root_user_and_starts_the_pool_worker(
    dockerfile: tuple[str, dict[str, str], list[Stage]],
) -> None:
    name, _, stages = dockerfile
    final = stages[-1]
    users = final.all("USER")
    assert users, f"{name}: the runtime stage needs a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{name}: USER {users[-1]} is root"

    env = env_of(final)
    assert env.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false" and env.get("DO_NOT_TRACK") == "1"
    if name == "Dockerfile.cuda":
        assert env.get("NVIDIA_VISIBLE_DEVICES") == "all"

    assert not final.all("ENTRYPOINT"), f"{name}: CMD alone, so that compose and Kubernetes can replace it"
    (cmd,) = final.all("CMD")[-1:]
    assert json.loads(cmd) == ["prefect", "worker", "start", "--pool", IMAGES[name]], f"{name}: CMD {cmd}"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = dockerignore()
    for path in (
        ".venv/bin/python",
        "voxclust-data/store/manifest.json",
        ".git/HEAD",
        "voxclust.egg-info/PKG-INFO",
        "docs/results/modelnet10/elbow.png",
        "lib/__pycache__/store.cpython-311.pyc",
        "lib/features/__pycache__/x.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
    ):
        assert ignored(path, patterns), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "constraints.txt", "README.md", "lib/voxels/store.py", "infra/dask/voxclust.yaml"):
        assert not ignored(path, patterns), f".dockerignore drops {path}, which the images need"


# ---------------------------------------------------------------------------------------------------------
# docker compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def test_compose_has_every_service_with_shared_settings_defined_once(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    assert any(key.startswith("x-") for key in compose), "shared settings live in x- extension fields"
    assert "<<: *" in COMPOSE.read_text(), "services take the shared settings through YAML anchors"
    assert set(compose.get("volumes") or {}) >= {"prefect-home", "minio-data"}


def test_compose_images_are_pinned_or_built_from_files_that_exist(compose: dict[str, Any]) -> None:
    dockerfiles = {}
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            assert is_pinned(service["image"]), f"{name}: image {service['image']} needs a fixed tag"
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (COMPOSE.parent / build["context"]).resolve()
        dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
        assert context == ROOT, f"{name}: build from the repository root (the images COPY lib/, flows/, ...)"
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        dockerfiles[name] = dockerfile.name
        assert is_pinned(service["image"]), f"{name}: tag the built image ({service.get('image')})"
    assert dockerfiles["worker-gpu"] == "Dockerfile.cuda"
    assert {dockerfiles[s] for s in SERVICES - {"minio", "minio-setup", "worker-gpu"}} == {"Dockerfile"}
    assert compose["services"]["minio"]["image"].startswith("minio/minio:RELEASE.")
    assert compose["services"]["minio-setup"]["image"].startswith("minio/mc:RELEASE.")


def test_compose_secrets_come_only_from_variables(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert not AWS_KEY_ID.search(text), "an AWS access key id in compose.yaml"
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert SECRET_REFERENCE.match(value), f"{name}: {key} must be ${{VAR}} or ${{VAR:?...}}, not {value!r}"


def test_compose_prefect_server_minio_and_dask(compose: dict[str, Any]) -> None:
    services = compose["services"]
    server = services["prefect-server"]
    assert command(server) == ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"]
    env = environment(server)
    assert SECRET_REFERENCE.match(env["PREFECT_SERVER_API_AUTH_STRING"])
    assert any(str(v).endswith(":" + env["PREFECT_HOME"]) for v in server["volumes"]), "PREFECT_HOME on a volume"
    assert "/api/health" in " ".join(server["healthcheck"]["test"])

    minio = services["minio"]
    assert minio["healthcheck"]["test"] and any(str(v).endswith(":/data") for v in minio["volumes"])
    assert "--console-address" in command(minio)
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} <= set(environment(minio))

    setup = services["minio-setup"]
    assert depends_on(setup) == {"minio": "service_healthy"}
    script = " ".join(command(setup))
    assert re.search(r"mc mb\b.*\bsite/voxclust\b", script), "minio-setup creates the voxclust bucket"
    policy_mounts = [v for v in setup["volumes"] if "bucket-policy.json" in v]
    assert policy_mounts and (COMPOSE.parent / policy_mounts[0].split(":")[0]).is_file()

    assert command(services["dask-scheduler"])[:2] == ["dask", "scheduler"]
    worker = command(services["dask-worker"])
    assert worker[:3] == ["dask", "worker", "tcp://dask-scheduler:8786"] and worker[3:5] == ["--nthreads", "1"]
    for name in ("dask-scheduler", "dask-worker"):
        assert environment(services[name])["DASK_CONFIG"] == DASK_CONFIG
    assert (ROOT / "infra" / "dask").is_dir()


def test_compose_prefect_workers(compose: dict[str, Any]) -> None:
    for name, pool in (("worker-cpu", "cpu"), ("worker-gpu", "gpu")):
        service = compose["services"][name]
        cmd = command(service)
        assert cmd[:3] == ["prefect", "worker", "start"] and cmd[cmd.index("--pool") + 1] == pool
        assert depends_on(service).get("prefect-server") == "service_healthy", f"{name} waits for the server"
        env = environment(service)
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert env["VOXCLUST_DASK_ADDRESS"] == "tcp://dask-scheduler:8786"
        assert env["AWS_DEFAULT_REGION"]
        for key in ("PREFECT_API_AUTH_STRING", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert SECRET_REFERENCE.match(env[key]), f"{name}: {key}"
    devices = compose["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_config_validates_the_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no `docker compose` here")
    dummy = {
        "PREFECT_AUTH": "admin:dummy-password",
        "MINIO_ROOT_USER": "dummy-admin",
        "MINIO_ROOT_PASSWORD": "dummy-admin-password",
        "AWS_ACCESS_KEY_ID": "dummy-worker",
        "AWS_SECRET_ACCESS_KEY": "dummy-worker-secret",
    }
    argv = [*cli, "-f", str(COMPOSE), "--profile", "gpu", "config", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in dummy}
    ok = subprocess.run(argv, env={**env, **dummy}, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    missing = {k: v for k, v in dummy.items() if k != "PREFECT_AUTH"}
    refused = subprocess.run(argv, env={**env, **missing}, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0 and "PREFECT_AUTH" in refused.stderr, "a missing secret must stop compose"


# ---------------------------------------------------------------------------------------------------------
# Kubernetes


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


@pytest.fixture(scope="module")
def secrets() -> dict[str, dict[str, str]]:
    """The example Secrets, by name: their keys and placeholder values."""
    out = {}
    for doc in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text()):
        if doc is None:
            continue
        assert doc["apiVersion"] == "v1" and doc["kind"] == "Secret"
        out[doc["metadata"]["name"]] = {str(k): str(v) for k, v in (doc.get("stringData") or {}).items()}
    return out


@pytest.fixture(scope="module")
def dask_cluster() -> dict[str, Any]:
    return load_yaml(K8S / "dask-cluster.yaml")


@pytest.fixture(scope="module")
def gpu_template() -> dict[str, Any]:
    data = json.loads((K8S / "gpu-base-job-template.json").read_text())
    assert isinstance(data, dict)
    return data


def values(pool: str) -> dict[str, Any]:
    return load_yaml(K8S / f"prefect-worker-{pool}.values.yaml")


def env_secret_refs(env: list[dict[str, Any]], where: str) -> Iterator[tuple[str, str]]:
    """(secret, key) of every secretKeyRef; fails on a secret-looking variable given inline."""
    for item in env:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            yield ref["name"], ref["key"]
        elif SECRET_NAME.search(item["name"]):
            raise AssertionError(f"{where}: {item['name']} is inline; take it from a Secret (secretKeyRef)")


def test_secrets_example_holds_only_placeholders(secrets: dict[str, dict[str, str]]) -> None:
    assert set(secrets) == {"voxclust-s3", "voxclust-prefect-auth"}
    s3 = secrets["voxclust-s3"]
    assert s3["AWS_ACCESS_KEY_ID"] == "CHANGE-ME" and s3["AWS_SECRET_ACCESS_KEY"] == "CHANGE-ME"
    assert "CHANGE-ME" in secrets["voxclust-prefect-auth"]["auth-string"]
    text = (K8S / "secrets.example.yaml").read_text()
    assert not AWS_KEY_ID.search(text)


@pytest.mark.parametrize("pool", ["cpu", "gpu"])
def test_worker_values_connect_to_the_server_with_secrets_from_kubernetes(
    pool: str, secrets: dict[str, dict[str, str]]
) -> None:
    worker = values(pool)["worker"]
    assert worker["apiConfig"] == "selfHostedServer"
    server = worker["selfHostedServerApiConfig"]
    assert server["apiUrl"].startswith("http") and server["apiUrl"].endswith("/api")
    auth = server["basicAuth"]
    assert auth["enabled"] is True and "authString" not in auth, "the auth string only from a Secret"
    assert "auth-string" in secrets[auth["existingSecret"]]
    assert worker["config"]["workPool"] == pool
    assert is_pinned(f"{worker['image']['repository']}:{worker['image']['prefectTag']}")
    # The chart's values schema allows only cpu and memory under worker.resources.
    for kind, amounts in worker["resources"].items():
        assert kind in ("requests", "limits") and set(amounts) <= {"cpu", "memory"}, (pool, kind, amounts)
    refs = list(env_secret_refs(worker.get("extraEnvVars") or [], f"{pool} values"))
    for secret, key in refs:
        assert key in secrets[secret]
    env_secrets = list(worker.get("extraEnvVarsSecrets") or [])
    if worker.get("extraEnvVarsSecret"):
        env_secrets.append(worker["extraEnvVarsSecret"])
    for secret in env_secrets:
        assert secret in secrets
    assert "apiKey" not in json.dumps(worker), "no API keys in values"


def test_cpu_worker_runs_flows_in_the_voxclust_image_next_to_the_dask_cluster(dask_cluster: dict[str, Any]) -> None:
    worker = values("cpu")["worker"]
    assert worker["config"]["type"] == "process"
    image = f"{worker['image']['repository']}:{worker['image']['prefectTag']}"
    assert image == dask_cluster["spec"]["worker"]["spec"]["containers"][0]["image"], "one CPU image"
    assert "voxclust-s3" in (worker.get("extraEnvVarsSecrets") or [worker.get("extraEnvVarsSecret")])
    env = {e["name"]: e.get("value") for e in worker["extraEnvVars"]}
    name, namespace = dask_cluster["metadata"]["name"], dask_cluster["metadata"]["namespace"]
    assert env["VOXCLUST_DASK_ADDRESS"] in (
        f"tcp://{name}-scheduler.{namespace}.svc.cluster.local:8786",
        f"tcp://{name}-scheduler.{namespace}.svc:8786",
    )


def test_gpu_pool_puts_flow_runs_on_gpu_nodes_with_a_gpu_each(
    gpu_template: dict[str, Any], secrets: dict[str, dict[str, str]], dask_cluster: dict[str, Any]
) -> None:
    worker = values("gpu")["worker"]
    assert worker["config"]["type"] == "kubernetes"
    assert worker["config"]["baseJobTemplate"]["existingConfigMapName"], "the gpu pool's template comes with it"

    assert set(gpu_template) == {"job_configuration", "variables"}
    variables = gpu_template["variables"]["properties"]
    config = gpu_template["job_configuration"]
    # Every placeholder names a variable of the template.
    placeholders = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", json.dumps(config)))
    assert placeholders <= set(variables), sorted(placeholders - set(variables))

    manifest = config["job_manifest"]
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"], "flow-run pods select GPU nodes"
    assert any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in pod["tolerations"])
    (container,) = pod["containers"]
    assert container["name"] == "prefect-job" and container["env"] == "{{ env }}"
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    placeholder = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", str(gpus))
    if placeholder:
        spec = variables[placeholder.group(1)]
        assert spec["type"] == "integer" and spec["default"] >= 1 and spec.get("minimum", 0) >= 1
    else:
        assert int(gpus) >= 1
    for source in container.get("envFrom", []):
        assert source["secretRef"]["name"] in secrets
    assert "voxclust-s3" in [s["secretRef"]["name"] for s in container.get("envFrom", [])]
    assert variables["image"]["default"].endswith("-cuda") and is_pinned(variables["image"]["default"])
    assert variables["namespace"]["default"] == dask_cluster["metadata"]["namespace"]


def test_dask_cluster_resource(dask_cluster: dict[str, Any], secrets: dict[str, dict[str, str]]) -> None:
    assert dask_cluster["apiVersion"] == "kubernetes.dask.org/v1" and dask_cluster["kind"] == "DaskCluster"
    spec = dask_cluster["spec"]
    assert isinstance(spec["worker"]["replicas"], int) and spec["worker"]["replicas"] >= 1
    (worker,) = spec["worker"]["spec"]["containers"]
    assert is_pinned(worker["image"])
    args = worker.get("command", []) + worker.get("args", [])
    assert args[:2] == ["dask", "worker"] and "$(DASK_WORKER_NAME)" in args
    assert args[args.index("--nthreads") + 1] == "1"
    env = {e["name"]: e for e in worker["env"]}
    assert env["DASK_CONFIG"]["value"] == DASK_CONFIG
    for secret, key in env_secret_refs(worker["env"], "dask worker"):
        assert key in secrets[secret]
    assert [s["secretRef"]["name"] for s in worker.get("envFrom", [])] == ["voxclust-s3"]

    (scheduler,) = spec["scheduler"]["spec"]["containers"]
    assert (scheduler.get("command", []) + scheduler.get("args", []))[:2] == ["dask", "scheduler"]
    assert 8786 in [p["containerPort"] for p in scheduler["ports"]]
    service = spec["scheduler"]["service"]
    ports = {p["port"] for p in service["ports"]}
    assert {8786, 8787} <= ports
    assert service["selector"] == {
        "dask.org/cluster-name": dask_cluster["metadata"]["name"],
        "dask.org/component": "scheduler",
    }


def test_bucket_policy_is_least_privilege() -> None:
    policy = json.loads((K8S / "bucket-policy.json").read_text())
    assert policy["Version"] == "2012-10-17"
    bucket = "arn:aws:s3:::voxclust"
    granted: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            assert action.startswith("s3:") and "*" not in action, action
        for resource in resources:
            assert resource == bucket or resource.startswith(bucket + "/"), resource
            assert resource != "*" and not resource.startswith(bucket + "/*"), f"{resource}: scope objects by prefix"
            for action in actions:
                granted.setdefault(action, set()).add(resource)
        if "s3:ListBucket" in actions:
            prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
            assert sorted(prefixes) == ["inbox/*", "stores/*"]
    assert granted == {
        "s3:ListBucket": {bucket},
        "s3:GetObject": {f"{bucket}/inbox/*", f"{bucket}/stores/*"},
        "s3:PutObject": {f"{bucket}/stores/*"},
        "s3:DeleteObject": {f"{bucket}/stores/*"},
    }


def test_the_stack_gives_its_dask_workers_the_settings_of_infra_dask(tmp_path: Path) -> None:
    from voxclust.stack import DASK_SETTINGS, Stack

    assert yaml.safe_load((INFRA / "dask" / "voxclust.yaml").read_text()) == DASK_SETTINGS
    folder = Stack(tmp_path)._dask_config()  # found without the source tree (works once installed)
    assert yaml.safe_load((folder / "voxclust.yaml").read_text()) == DASK_SETTINGS
