"""The `ptune serve` HTTP app (FastAPI): one MultiPromptModel behind a dynamic batcher and a registry watcher.

POST /v1/predict (one task), POST /v1/batch (mixed tasks), GET /v1/tasks, GET /health, GET /metrics
(Prometheus text), GET / (playground page), GET /docs and /openapi.json (FastAPI), and the OpenAI-compatible
/v1/models, /v1/completions, /v1/chat/completions (`openai_api`). Limits: body size 413 (`limits.BodyLimit`),
inputs per request and characters per input 422 (in the request schema), unknown task 404 listing the served
ones, more than --max-queue rows waiting 503 with Retry-After; with --api-key, 401 on /v1 without it (`auth`). Route annotations name classes made by `request_models`, so
this module does not use postponed annotations.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ptune.errors import DataError, PtuneError
from ptune.serving.auth import BearerAuth
from ptune.serving.batcher import DynamicBatcher, Overloaded
from ptune.serving.engine import ContinuousBatcher
from ptune.serving.inputs import field_problems
from ptune.serving.limits import BodyLimit
from ptune.serving.metrics import ServeMetrics
from ptune.serving.multi_prompt import LoadedTask, MultiPromptModel, Prediction, Row
from ptune.serving.openai_api import add_openai_routes
from ptune.serving.openai_errors import OpenAIError, from_http, from_validation, is_openai, openai_reply
from ptune.serving.registry_source import RegistryWatcher, VersionScore, version_score
from ptune.serving.schemas import (
    FIELDS_TAG,
    TEXT_TAG,
    Health,
    PredictionOut,
    PredictResponse,
    Score,
    TaskInfo,
    TaskVersions,
    request_models,
)
from ptune.serving.settings import ServeSettings

log = logging.getLogger(__name__)
PLAYGROUND = Path(__file__).with_name("playground.html")


def in_inputs(i: int) -> list:
    """Where input `i` of a /v1/predict body lies (a 422's `loc`)."""
    return ["body", "inputs", i]


def in_batch(i: int) -> list:
    """Where the input of item `i` of a /v1/batch body lies."""
    return ["body", "inputs", i, "text"]


def make_batcher(model: MultiPromptModel, settings: ServeSettings,
                 on_batch: Callable[[int, int], None]) -> DynamicBatcher | ContinuousBatcher:
    """The scheduler `settings` ask for: continuous batching, static batching of whole requests, or (with
    batching off) one request at a time."""
    if settings.batching and settings.scheduler == "continuous":
        return ContinuousBatcher(model, settings.max_batch_size, settings.max_queue, on_batch, settings.max_prefill_tokens)
    return DynamicBatcher(lambda rows: model.predict(rows, batch_size=settings.max_batch_size),
                          settings.max_batch_size, settings.max_wait_ms, settings.batching,
                          on_batch=on_batch, max_queue=settings.max_queue)


class Service:
    """What the routes share: the model, its batcher, the registry watcher (None: no hot swap), metrics."""

    def __init__(self, model: MultiPromptModel, settings: ServeSettings, watcher: RegistryWatcher | None = None):
        self.model, self.settings, self.watcher, self.metrics = model, settings, watcher, ServeMetrics()
        self.scores: dict[tuple[str, str], VersionScore | None] = {}  # (task, version) -> recorded score
        if watcher is not None:
            watcher.on_event = lambda task, outcome: self.metrics.swaps.labels(task, outcome).inc()
        self.batcher = make_batcher(model, settings, self.metrics.observe_batch)

    def check(self, rows: list[Row], at: Callable[[int], list] = in_inputs) -> None:
        """404 for unknown tasks (listing the served ones); 422 for an object input lacking a field of its task
        or naming one it lacks (at its place in the body: `at(row index)`), or an input that tokenises to nothing."""
        tasks = self.model.snapshot()
        unknown = sorted({r.task for r in rows} - set(tasks))
        if unknown:
            raise HTTPException(404, f"unknown task(s) {unknown}; served tasks: {sorted(tasks)}")
        problems = [p for i, r in enumerate(rows) for p in field_problems(tasks[r.task].spec, r.text, r.raw, at(i))]
        if problems:
            raise HTTPException(422, problems)
        try:
            self.model.check_rows(rows)
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None

    def submit(self, rows: list[Row], at: Callable[[int], list] = in_inputs) -> Future:
        """Check `rows` and queue them: Future[list[Prediction]]; 503 with Retry-After while the queue is full."""
        self.check(rows, at)
        try:
            return self.batcher.submit(rows)
        except Overloaded as exc:
            raise HTTPException(503, f"overloaded: {exc}; retry later", headers={"Retry-After": "1"}) from None

    async def predict(self, rows: list[Row], at: Callable[[int], list] = in_inputs) -> tuple[list[Prediction], float]:
        start = time.perf_counter()
        preds = await asyncio.wrap_future(self.submit(rows, at))
        return preds, (time.perf_counter() - start) * 1000

    def versions(self) -> dict[str, TaskVersions]:
        """Per task: the version served and the one the alias points at ("degraded" while they differ)."""
        out = {}
        for name, task in sorted(self.model.snapshot().items()):
            aliased, status, problem = (self.watcher.state(name, task.version) if self.watcher is not None
                                        else (task.version, "ok", None))
            out[name] = TaskVersions(served=task.version, aliased=aliased, status=status, problem=problem)
        return out

    def score(self, task: LoadedTask) -> VersionScore | None:
        """The registry's test score of the served version vs the best baseline (once per version; None when
        the registry has no record of it, e.g. a prompt loaded from disk)."""
        key = (task.name, task.version)
        if key not in self.scores:
            try:
                self.scores[key] = version_score(task.spec, task.version)
            except PtuneError as exc:
                log.warning("no recorded score for %s version %s: %s", task.name, task.version, exc)
                self.scores[key] = None
        return self.scores[key]

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.batcher.close()


def _out(preds: list[Prediction]) -> list[PredictionOut]:
    return [PredictionOut(task=p.task, label=p.label, scores=p.scores, version=p.version) for p in preds]


def create_app(service: Service) -> FastAPI:
    """The FastAPI app over `service`; the watcher starts with the app and both stop with it."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if service.watcher is not None:
            service.watcher.start()
        yield
        service.close()

    app = FastAPI(title="ptune serve", version="1", lifespan=lifespan,
                  description="One frozen base model; the champion soft prompt of every task; mixed-task batches.")
    app.add_middleware(BodyLimit, max_bytes=service.settings.max_body_bytes)
    if service.settings.api_key:
        app.add_middleware(BearerAuth, api_key=service.settings.api_key)  # added last: runs first
    _add_timing(app, service)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OpenAIError, lambda request, exc: openai_reply(exc))
    _add_routes(app, service)
    add_openai_routes(app, service)
    return app


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each rejected field and the limit it broke, never echoing the input back (FastAPI's default
    handler returns the rejected value whole: a 100,000-character input came back in the reply); on the
    OpenAI routes, a 400 OpenAI error object naming the first field."""
    if is_openai(request.url.path):
        return openai_reply(from_validation(exc.errors()))
    return JSONResponse({"detail": [_problem(error) for error in exc.errors()]}, status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if is_openai(request.url.path):
        return openai_reply(from_http(exc))
    return await http_exception_handler(request, exc)


def _problem(error: dict) -> dict:
    parts = list(error.get("loc", ()))  # without the tag of the form an input took (string / fields)
    loc = [str(p) for i, p in enumerate(parts) if not (p in (TEXT_TAG, FIELDS_TAG) and i and
                                                      (isinstance(parts[i - 1], int) or parts[i - 1] == "text"))]
    field = ".".join(part for part in loc if part != "body") or "body"
    limits = {k: v for k, v in (error.get("ctx") or {}).items() if isinstance(v, (int, float))}
    return {"loc": loc, "field": field, "msg": f"{field}: {error.get('msg', 'invalid')}", "type": error.get("type", ""),
            **({"limit": limits} if limits else {})}


def _add_timing(app: FastAPI, service: Service) -> None:
    @app.middleware("http")
    async def timing(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        service.metrics.observe_request(request.url.path, response.status_code, time.perf_counter() - start)
        return response


def _task_infos(service: Service) -> list[TaskInfo]:
    model, versions = service.model, service.versions()
    return [TaskInfo(task=t.name, alias=service.settings.alias, kind=t.spec.kind, version=t.version,
                     inputs=list(t.spec.input_columns), score=_score(service.score(t)),
                     labels=list(t.spec.label_words), prompt_tokens=int(t.prompt.shape[0]), ensemble=len(t.prompts),
                     method=t.method, metrics=dict(t.meta.metrics), base_model=model.base.spec,
                     base_fingerprint=model.base.fingerprint, alias_version=versions[t.name].aliased,
                     status=versions[t.name].status, problem=versions[t.name].problem)
            for t in sorted(model.snapshot().values(), key=lambda t: t.name)]


def _score(found: VersionScore | None) -> Score | None:
    return None if found is None else Score(metric=found.metric, value=found.value, baseline=found.baseline)


def _add_routes(app: FastAPI, service: Service) -> None:
    PredictRequest, BatchRequest = request_models(service.settings)
    model = service.model

    @app.post("/v1/predict", response_model=PredictResponse, responses={404: {}, 413: {}, 422: {}})
    async def predict(body: PredictRequest) -> PredictResponse:
        """Label (or generated text), per-label scores and prompt version for each input of one task."""
        preds, ms = await service.predict([Row(body.task, text, body.raw) for text in body.inputs])
        return PredictResponse(predictions=_out(preds), latency_ms=ms)

    @app.post("/v1/batch", response_model=PredictResponse, responses={404: {}, 413: {}, 422: {}})
    async def batch(body: BatchRequest) -> PredictResponse:
        """Inputs of several tasks in one call, answered in one mixed-task batch."""
        preds, ms = await service.predict([Row(item.task, item.text, item.raw) for item in body.inputs],
                                          in_batch)
        return PredictResponse(predictions=_out(preds), latency_ms=ms)

    @app.get("/v1/tasks", response_model=list[TaskInfo])
    def tasks() -> list[TaskInfo]:  # not async: a new version's score is read from the registry once
        """Served tasks: alias, prompt version (and the one the alias points at), input fields, test score vs
        the best baseline, kind, labels, metrics, base model."""
        return _task_infos(service)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        """'ok', or 'degraded' while a task serves another version than the one its alias points at."""
        versions = service.versions()
        status = "ok" if all(v.status == "ok" for v in versions.values()) else "degraded"
        return Health(status=status, tasks=len(model.tasks), base_model=model.base.spec,
                      precision=model.precision_name, versions=versions)

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text: request counts and latency per endpoint, rows and requests per model call."""
        body = service.metrics.render({t: v.version for t, v in model.snapshot().items()})
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"))
