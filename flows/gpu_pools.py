"""ptune's GPU work pools, created from the base job templates in flows/pools/: `python -m flows.gpu_pools`.

- `ptune-docker-gpu` (type `docker`): each flow run is a container of the ptune worker image with an NVIDIA
  device request (`docker run --gpus N`); a `prefect-docker` worker on a GPU host starts them;
- `ptune-k8s-gpu` (type `kubernetes`): each flow run is a Kubernetes Job whose container has
  `resources.limits["nvidia.com/gpu"]: N`; a `prefect-kubernetes` worker in the cluster submits them.

Each template is Prefect's default for its type (`prefect work-pool get-default-base-job-template --type T`)
with the GPU request added as the job variable `gpu_count`. The Prefect server accepts these pools without
prefect-docker or prefect-kubernetes installed: only the workers need them. An existing pool is left as it is
(a team may have edited it in the UI) unless `--update` replaces its template. The deployments on these pools
are in prefect-gpu.yaml (`make deploy-gpu`; docs/deploy-gpu.md).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

TEMPLATES = Path(__file__).with_name("pools")


@dataclass(frozen=True)
class GpuPool:
    name: str        # the work pool's name, as prefect-gpu.yaml's deployments name it
    type: str        # Prefect worker type: `prefect worker start --type <type>`
    template: str    # file under flows/pools/
    description: str

    def base_job_template(self, image: str | None = None) -> dict[str, Any]:
        """The stored template; `image` replaces the default of the `image` job variable."""
        template = json.loads((TEMPLATES / self.template).read_text())
        if image:
            template["variables"]["properties"]["image"]["default"] = image
        return template


GPU_POOLS = (
    GpuPool("ptune-docker-gpu", "docker", "docker-gpu.json",
            "ptune flow runs as Docker containers with NVIDIA GPUs (--gpus); needs prefect-docker."),
    GpuPool("ptune-k8s-gpu", "kubernetes", "kubernetes-gpu.json",
            "ptune flow runs as Kubernetes Jobs requesting nvidia.com/gpu; needs prefect-kubernetes."),
)


def ensure_gpu_pool(pool: GpuPool, *, image: str | None = None, update: bool = False) -> str:
    """Create the pool if it is missing; with `update`, replace an existing pool's template.
    Returns "created", "updated" or "exists". A pool of that name but another type is an error."""
    template = pool.base_job_template(image)
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(pool.name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(
                    name=pool.name, type=pool.type, base_job_template=template, description=pool.description))
                return "created"
            except ObjectAlreadyExists:  # a concurrent creator won the race
                return "exists"
        if existing.type != pool.type:
            raise ValueError(f"work pool {pool.name!r} exists with type {existing.type!r}, not "
                             f"{pool.type!r}: delete it (`prefect work-pool delete {pool.name}`), then rerun")
        if not update:
            return "exists"
        client.update_work_pool(pool.name, WorkPoolUpdate(base_job_template=template,
                                                          description=pool.description))
        return "updated"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.gpu_pools", description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="default image of the pools' jobs, e.g. "
                                        "registry.example/ptune-worker:0.1.0-cuda (default: the templates' "
                                        "ptune-worker:0.1.0-cuda)")
    parser.add_argument("--update", action="store_true", help="replace the template of pools that exist")
    args = parser.parse_args(argv)
    for pool in GPU_POOLS:
        state = ensure_gpu_pool(pool, image=args.image, update=args.update)
        print(f"work pool {pool.name!r} ({pool.type}): {state}")


if __name__ == "__main__":
    main()
