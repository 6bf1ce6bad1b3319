"""The GPU work pools (flows/gpu_pools.py, flows/pools/*.json), their deployments (prefect-gpu.yaml) and the
worker image (docker/worker.Dockerfile).

Against a real `prefect server` on 127.0.0.1 (started and stopped by PID, ready when uvicorn says it listens):
create the pools and deploy as `make deploy-gpu` does, read them back through the client, and render each
deployment's job the way a worker renders it, so the Kubernetes manifest's `nvidia.com/gpu` limit and the
Docker device request are checked as they would be sent. No container runtime or cluster is needed: the
Prefect server accepts docker and kubernetes pools without prefect-docker or prefect-kubernetes installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.gpu_pools import GPU_POOLS, GpuPool, ensure_gpu_pool
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
DEFAULT_IMAGE = f"ptune-worker:{VERSION}-cuda"
DEPLOYED_IMAGE = "registry.example/ptune-worker:test-cuda"
POOL = {pool.type: pool for pool in GPU_POOLS}


def prefect_default(worker_type: str) -> dict[str, Any]:
    """Prefect's default base job template for a worker type, as `prefect work-pool
    get-default-base-job-template --type T` prints it offline: the server's bundled worker metadata."""
    import prefect.server.api.collections as collections

    views = Path(collections.__file__).parent / "collections_data" / "views"
    metadata = json.loads((views / "aggregate-worker-metadata.json").read_text())
    return next(worker["default_base_job_configuration"] for package in metadata.values()
                for worker in package.values() if worker.get("type") == worker_type)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process we started (by its PID), SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """`prefect server start` (API only); ready when uvicorn prints that it listens. Its output is then
    drained into server.log by a thread, so the pipe never fills."""
    home, port = tmp_path_factory.mktemp("prefect-gpu-home"), free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    command = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
               "--no-ui", "--no-services", "--log-level", "INFO"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen: list[str] = []
    try:
        for line in proc.stdout:  # blocks until the next line; ends when the server exits
            seen.append(line)
            if f"Uvicorn running on http://127.0.0.1:{port}" in line:
                break
        assert proc.poll() is None, "prefect server exited:\n" + "".join(seen[-40:])
        with (home / "server.log").open("w") as log:
            drain = threading.Thread(target=lambda: log.writelines(proc.stdout), daemon=True)
            drain.start()
            yield env
            stop(proc)
            drain.join(10)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def deployed(server) -> dict[str, str]:
    """`make deploy-gpu`'s two commands: create the pools, deploy prefect-gpu.yaml on them."""
    env = {**server, "PTUNE_IMAGE": DEPLOYED_IMAGE, "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    pools = subprocess.run([sys.executable, "-m", "flows.gpu_pools"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
    assert pools.returncode == 0, pools.stdout + pools.stderr
    assert pools.stdout.splitlines() == [f"work pool {p.name!r} ({p.type}): created" for p in GPU_POOLS]
    deploy = subprocess.run([PREFECT, "--no-prompt", "deploy", "--prefect-file", "prefect-gpu.yaml", "--all"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    return env


@contextmanager
def api(env: dict[str, str]) -> Iterator[Any]:
    """The sync Prefect client on the test server."""
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            yield client


def render(base_job_template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The job configuration a worker builds for a flow run: the pool's template with the variables applied
    (BaseJobConfiguration.from_template_and_values, the step every Prefect worker type shares)."""
    from prefect.workers.base import BaseJobConfiguration
    from pydantic import ConfigDict

    class Rendered(BaseJobConfiguration):
        model_config = ConfigDict(extra="allow")  # the docker/kubernetes fields, kept as rendered

    return asyncio.run(Rendered.from_template_and_values(base_job_template, job_variables)).model_dump()


@pytest.mark.parametrize("pool", GPU_POOLS, ids=lambda p: p.type)
def test_templates_are_prefects_defaults_plus_a_gpu_request(pool: GpuPool):
    from prefect.server.schemas.actions import validate_base_job_template

    ours, default = pool.base_job_template(), prefect_default(pool.type)
    validate_base_job_template(ours)  # every {{ placeholder }} is a declared variable: the server's own check
    assert set(default["job_configuration"]) <= set(ours["job_configuration"])
    for name, spec in default["variables"]["properties"].items():
        assert ours["variables"]["properties"][name].get("type") == spec.get("type"), name
    added = set(ours["variables"]["properties"]) - set(default["variables"]["properties"])
    assert {"gpu_count", "shm_size"} <= added
    variables = ours["variables"]["properties"]
    assert (variables["gpu_count"]["type"], variables["gpu_count"]["default"]) == ("integer", 1)
    assert variables["image"]["default"] == DEFAULT_IMAGE


def test_pools_and_deployments_read_back_with_the_gpu_request(deployed):
    with api(deployed) as client:
        pools = {p.type: client.read_work_pool(p.name) for p in GPU_POOLS}
        k8s = client.read_deployment_by_name("train-task/train-k8s-gpu")
        docker = client.read_deployment_by_name("train-task/train-docker-gpu")
    for pool in pools.values():
        assert pool.base_job_template["variables"]["properties"]["image"]["default"] == DEFAULT_IMAGE
    workdir = {"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}
    for deployment, pool in ((k8s, POOL["kubernetes"]), (docker, POOL["docker"])):
        variables = deployment.job_variables
        assert deployment.work_pool_name == pool.name and "gpu" in deployment.tags
        assert (variables["image"], variables["gpu_count"]) == (DEPLOYED_IMAGE, 1)
        assert variables["env"]["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
        assert deployment.pull_steps == [workdir]
        assert "TrainFlowParams" in str(deployment.parameter_openapi_schema)

    with temporary_settings({PREFECT_API_URL: deployed["PREFECT_API_URL"]}):
        job = render(pools["kubernetes"].base_job_template, k8s.job_variables)["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}  # unset cpu/memory limits are dropped
    assert container["image"] == DEPLOYED_IMAGE and container["securityContext"]["runAsNonRoot"] is True
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nodeSelector" not in pod  # unset: any GPU node
    assert pod["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}


def test_docker_job_sends_the_device_request_of_docker_run_gpus(deployed):
    """The rendered container_create_kwargs, passed through docker-py as the Docker worker passes them, give
    the HostConfig that `docker run --gpus 1 --shm-size 1g` sends."""
    from docker.types import HostConfig

    with api(deployed) as client:
        pool = client.read_work_pool(POOL["docker"].name)
        deployment = client.read_deployment_by_name("train-task/train-docker-gpu")
        job = render(pool.base_job_template, deployment.job_variables)
    assert job["image"] == DEPLOYED_IMAGE
    host = HostConfig(version="1.44", **job["container_create_kwargs"])
    assert [(r["Driver"], r["Count"], r["Capabilities"]) for r in host["DeviceRequests"]] == \
        [("nvidia", 1, [["gpu"]])]
    assert host["ShmSize"] == 1 << 30


def test_a_run_can_ask_for_more_gpus_and_the_server_checks_the_type(deployed):
    from prefect.states import Scheduled

    later = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=365))  # no worker would take it
    form = {"params": {"task": "rotten_tomatoes"}}
    with api(deployed) as client:
        deployment = client.read_deployment_by_name("train-task/train-k8s-gpu")
        pool = client.read_work_pool(POOL["kubernetes"].name)
        with pytest.raises(Exception, match="gpu_count"):  # 409 from the server: 'two' is not an integer
            client.create_flow_run_from_deployment(deployment.id, parameters=form,
                                                   job_variables={"gpu_count": "two"}, state=later)
        run = client.create_flow_run_from_deployment(deployment.id, parameters=form,
                                                     job_variables={"gpu_count": 4}, state=later)
        try:
            variables = {**deployment.job_variables, **client.read_flow_run(run.id).job_variables}
            job = render(pool.base_job_template, variables)["job_manifest"]
        finally:
            client.delete_flow_run(run.id)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 4}


def test_an_edited_pool_is_kept_unless_updated(server):
    pool = POOL["kubernetes"]
    with temporary_settings({PREFECT_API_URL: server["PREFECT_API_URL"]}):
        assert ensure_gpu_pool(pool) in ("created", "exists")
        with get_client(sync_client=True) as client:
            edited = client.read_work_pool(pool.name).base_job_template
            edited["variables"]["properties"]["gpu_count"]["default"] = 8
            client.update_work_pool(pool.name, WorkPoolUpdate(base_job_template=edited))
            assert ensure_gpu_pool(pool) == "exists"
            kept = client.read_work_pool(pool.name).base_job_template["variables"]["properties"]
            assert kept["gpu_count"]["default"] == 8
            assert ensure_gpu_pool(pool, image="registry.example/ptune-worker:next", update=True) == "updated"
            variables = client.read_work_pool(pool.name).base_job_template["variables"]["properties"]
            assert (variables["gpu_count"]["default"], variables["image"]["default"]) == \
                (1, "registry.example/ptune-worker:next")
            client.update_work_pool(pool.name, WorkPoolUpdate(base_job_template=pool.base_job_template()))

            clash = GpuPool("ptune-gpu-clash", "kubernetes", pool.template, "test")
            client.create_work_pool(WorkPoolCreate(name=clash.name, type="process"))
        with pytest.raises(ValueError, match="exists with type 'process', not 'kubernetes'"):
            ensure_gpu_pool(clash)


def makefile_switches() -> dict[str, str]:
    """`export NAME ?= VALUE` lines of the Makefile: the offline and telemetry switches."""
    text = (REPO / "Makefile").read_text()
    return dict(re.findall(r"^export (\w+) \?= (\S+)$", text, flags=re.M))


def dockerfile_env(text: str) -> dict[str, str]:
    joined = text.replace("\\\n", " ")
    lines = [line for line in joined.splitlines() if line.startswith("ENV ")]
    return dict(pair for line in lines for pair in re.findall(r"(\w+)=(\S+)", line))


def test_worker_image_is_offline_non_root_and_copies_what_flows_need():
    dockerfile = (REPO / "docker" / "worker.Dockerfile").read_text()
    env = dockerfile_env(dockerfile)
    not_in_image = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",  # for an ephemeral API on a busy CI
                    "PTUNE_TZ"}  # read when `prefect deploy` runs
    wanted = {k: v for k, v in makefile_switches().items() if k not in not_in_image}
    assert {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DO_NOT_TRACK"} <= set(wanted)
    assert {k: env.get(k) for k in wanted} == wanted
    assert env["PTUNE_PROJECT_DIR"] == "/app" and "NVIDIA_VISIBLE_DEVICES" not in env
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", dockerfile, flags=re.M)
    assert "ARG PYTHON_VERSION=3.11" in dockerfile
    assert re.search(r"^ARG TORCH_VERSION=(\S+)$", dockerfile, flags=re.M)[1] == \
        re.search(r"^TORCH_VERSION := (\S+)$", (REPO / "Makefile").read_text(), flags=re.M)[1]
    assert "cpu) pip install --index-url" in dockerfile and "cuda) pip install" in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, flags=re.M)
    assert users == ["${UID}"] and "ARG UID=1000" in dockerfile  # numeric, not root: runAsNonRoot checks it
    assert dockerfile.index("USER ${UID}") < dockerfile.index("ptune model-info")  # the user owns the cache

    ignore = (REPO / "docker" / "worker.Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    copies = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    copied = [src for sources in copies for src in sources]
    assert copied and set(copied) <= allowed
    assert all((REPO / src).exists() for src in copied), [src for src in copied if not (REPO / src).exists()]
    for task in re.search(r'^ARG PTUNE_TASKS="([^"]+)"$', dockerfile, flags=re.M)[1].split():
        assert task in (REPO / "params.yaml").read_text()


def test_make_deploy_gpu_uses_the_pools_default_image():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^PTUNE_IMAGE \?= (\S+)$", makefile, flags=re.M)[1] == DEFAULT_IMAGE
    assert "--prefect-file prefect-gpu.yaml --all" in makefile and "-m flows.gpu_pools" in makefile
