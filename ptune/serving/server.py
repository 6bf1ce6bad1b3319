"""Build and run a `ptune serve` server: the project's base model, `@<alias>` of every task, uvicorn.

Tasks are `--tasks` or the project's `run_tasks`. The base model is the one params.yaml names; every
prompt is checked against its fingerprint at load (a prompt trained on another base is refused: one
server holds one base model). It computes in `evaluate.precision`, as `ptune evaluate` and `ptune report`
do: under `auto`, bf16 on a CPU with bf16 units, every frozen weight held in bf16 (`MultiPromptModel`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ptune.config import Params
from ptune.data.catalog import all_tasks, get_task
from ptune.errors import ConfigError
from ptune.model.base import load_held_model
from ptune.model.precision import autocast_dtype
from ptune.serving.app import Service, create_app
from ptune.serving.multi_prompt import MultiPromptModel
from ptune.serving.registry_source import RegistryWatcher, alias_version, load_aliased
from ptune.serving.settings import ServeSettings

log = logging.getLogger(__name__)


def build_service(params: Params, tasks: Sequence[str], settings: ServeSettings) -> Service:
    """Load the base model and `@alias` of each task (ConfigError when there is nothing to serve)."""
    names = list(tasks) or list(params.run_tasks)
    if not names:
        raise ConfigError("nothing to serve: give --tasks or list run_tasks in params.yaml")
    known = all_tasks(params)  # a registered version carries its spec: the registry alone may know a task
    specs = [get_task(name, params) if name in known else name for name in names]
    unknown = [name for name in names if name not in known and alias_version(name, settings.alias) is None]
    if unknown:  # before the slow load
        get_task(unknown[0], params)  # ConfigError: unknown task, with the known ones
    model = served_model(params)
    for task in load_aliased(model, specs, settings.alias):
        log.info("serving %s version %s (%d prompt tokens)", task.name, task.version, task.prompt.shape[0])
    watcher = RegistryWatcher(model, specs, settings.alias, settings.poll_seconds) if settings.poll_seconds else None
    return Service(model, settings, watcher)


def served_model(params: Params) -> MultiPromptModel:
    """params.yaml's base model, computing in its `evaluate.precision` (ConfigError for an impossible one)."""
    base = load_held_model(params.model, params.model_dtype, {"evaluate.precision": params.evaluate.precision},
                           quantize=params.model_quantize, device_map=params.model_device_map)
    precision = autocast_dtype(params.evaluate.precision, base.device, base.n_params, "evaluate.precision")
    log.info("serving %s in %s", base.spec, "fp32" if precision is None else str(precision).removeprefix("torch."))
    return MultiPromptModel(base, precision=precision)


def serve(params: Params, tasks: Sequence[str], settings: ServeSettings) -> None:
    """Run the server until interrupted (uvicorn)."""
    import uvicorn

    if not settings.loopback and not settings.api_key:
        log.warning("ptune serve listens on %s: reachable from other machines. It has no authentication "
                    "(--api-key or PTUNE_API_KEY); put it behind a reverse proxy that adds TLS and access control "
                    "(docs/serving.md).", settings.host)
    elif not settings.loopback:
        log.info("ptune serve listens on %s with an API key on /v1; it sends the key in the clear without TLS "
                 "(put a reverse proxy with TLS in front, docs/serving.md).", settings.host)
    app = create_app(build_service(params, tasks, settings))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
