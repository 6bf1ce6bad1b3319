"""`ptune serve` over HTTP on 127.0.0.1, with champions from a real MLflow SQLite registry: predictions
equal the model's own, limits answer 4xx with a message, metrics and OpenAPI are served, a champion
moved under concurrent load swaps without a failed or mixed-version response, a prompt for another base
model is refused."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import torch

from ptune.data.catalog import get_task
from ptune.data.spec import format_input
from ptune.errors import ArtifactError
from ptune.registry import model_registry
from ptune.serving.multi_prompt import MultiPromptModel, Row
from ptune.serving.registry_source import load_aliased, load_version
from tests.ptune.serving.conftest import TASKS
from tests.ptune.serving.helpers import SCORE_TOL, publish


def test_predict_and_batch_equal_the_model(served):
    service, url, _, _ = served
    texts = ["good", "a witty gorgeous film with a great actor " * 4]
    one = httpx.post(f"{url}/v1/predict", json={"task": "rotten_tomatoes", "inputs": texts}).json()
    items = [{"task": t, "text": x} for x in texts for t in TASKS]
    mixed = httpx.post(f"{url}/v1/batch", json={"inputs": items}).json()
    direct = service.model.predict([Row(i["task"], i["text"]) for i in items])
    assert [p["task"] for p in mixed["predictions"]] == [i["task"] for i in items]
    for got, want in zip(mixed["predictions"], direct, strict=True):
        assert (got["label"], got["version"]) == (want.label, want.version)
        assert got["scores"].keys() == want.scores.keys()
        torch.testing.assert_close(torch.tensor(list(got["scores"].values())),
                                   torch.tensor(list(want.scores.values())), **SCORE_TOL)
    assert [p["label"] for p in one["predictions"]] == [p["label"] for p in mixed["predictions"][::4]]
    assert one["predictions"][0]["version"] == "1" and one["latency_ms"] > 0


def test_tasks_health_metrics_openapi_playground(served):
    _, url, _, base = served
    tasks = {t["task"]: t for t in httpx.get(f"{url}/v1/tasks").json()}
    assert set(tasks) == set(TASKS)
    assert tasks["intent"]["prompt_tokens"] == TASKS["intent"] and tasks["xsum"]["kind"] == "generation"
    assert tasks["rotten_tomatoes"]["labels"] == list(get_task("rotten_tomatoes").label_words)
    assert tasks["rotten_tomatoes"]["base_fingerprint"] == base.fingerprint
    health = httpx.get(f"{url}/health").json()
    assert {k: v for k, v in health.items() if k != "versions"} == {
        "status": "ok", "tasks": 4, "base_model": base.spec, "precision": "fp32"}  # a tiny model: auto keeps fp32
    assert health["versions"]["intent"] == {"served": "1", "aliased": "1", "status": "ok", "problem": None}
    metrics = httpx.get(f"{url}/metrics").text
    for name in ("ptune_requests_total{", "ptune_request_latency_seconds_bucket{", "ptune_batch_rows_bucket{",
                 'ptune_prompt_version{task="intent"}'):
        assert name in metrics
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/batch", "/v1/tasks", "/health", "/metrics"} <= set(paths)
    assert 'id="task"' in httpx.get(f"{url}/").text


@pytest.mark.parametrize("body, status, message", [
    ({"task": "nope", "inputs": ["x"]}, 404, "served tasks: ['intent', 'rotten_tomatoes'"),
    ({"task": "intent", "inputs": ["x"] * 9}, 422, "at most 8 items"),
    ({"task": "intent", "inputs": ["x" * 201]}, 422, "at most 200 characters"),
    ({"task": "intent", "inputs": []}, 422, "at least 1 item"),
    ({"task": "intent"}, 422, "Field required"),
    ({"task": "intent", "inputs": ["x"], "extra": 1}, 422, "Extra inputs are not permitted"),
    ({"task": "intent", "inputs": ["x" * 190] * 8}, 413, "larger than 1500 bytes"),
])
def test_bad_requests_get_4xx_with_a_message(served, body, status, message):
    _, url, _, _ = served
    resp = httpx.post(f"{url}/v1/predict", json=body)
    assert resp.status_code == status
    assert message in json.dumps(resp.json()["detail"])


def test_422_names_the_field_and_limit_without_echoing_the_input(served):
    _, url, _, _ = served
    secret = "confidential-" * 70  # 910 characters: under the body limit, over max_input_chars=200
    resp = httpx.post(f"{url}/v1/batch", json={"inputs": [{"task": "intent", "text": "ok"},
                                                          {"task": "intent", "text": secret}]})
    assert resp.status_code == 422 and "confidential" not in resp.text
    [problem] = resp.json()["detail"]
    assert problem["field"] == "inputs.1.text" and problem["limit"] == {"max_length": 200}
    assert problem["msg"] == "inputs.1.text: String should have at most 200 characters" and "input" not in problem


def test_malformed_json_and_unknown_task_in_a_batch(served):
    _, url, _, _ = served
    resp = httpx.post(f"{url}/v1/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422 and "JSON decode error" in resp.text
    resp = httpx.post(f"{url}/v1/batch", json={"inputs": [{"task": "intent", "text": "x"}, {"task": "zz", "text": "y"}]})
    assert resp.status_code == 404 and "unknown task(s) ['zz']" in resp.json()["detail"]


def test_prompt_for_another_base_is_refused(served):
    service, url, tmp, base = served
    version = publish(tmp, base, "intent", 2, seed=40, alias="wrong-base", fingerprint="f" * 64)
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_version(MultiPromptModel(base), get_task("intent"), version)
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_aliased(MultiPromptModel(base), [get_task("intent")], alias="wrong-base")
    model_registry.set_alias("intent", "champion", version)  # the running server's watcher sees it, refuses it
    refused = 'ptune_prompt_swaps_total{outcome="failed",task="intent"} 1.0'
    until(lambda: refused in httpx.get(f"{url}/metrics").text, "the watcher never refused the version")
    model_registry.set_alias("intent", "champion", "1")
    assert service.model.snapshot()["intent"].version == "1"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'ptune_prompt_swaps_total{outcome="failed",task="intent"} 1.0' in metrics  # refused once, not retried


def test_champion_moved_under_load_swaps_without_failed_or_mixed_responses(served):
    service, url, tmp, base = served
    text = "sad dull plot but a great actor"
    old = service.model.snapshot()["strategyqa"]
    results, errors, stop = [], [], threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                items = [{"task": "strategyqa", "text": text}] * 3 + [{"task": "intent", "text": text}]
                resp = http.post(f"{url}/v1/batch", json={"inputs": items})
                (results if resp.status_code == 200 else errors).append(resp.json())

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    until(lambda: len(results) >= 6, "no responses under load before the swap")
    new_version = publish(tmp, base, "strategyqa", 7, seed=77)  # a longer prompt: a visibly different answer
    until(lambda: service.model.snapshot()["strategyqa"].version == new_version, "the new version never went live")
    after = len(results)
    until(lambda: len(results) >= after + 6, "no responses under load after the swap")
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    new = service.model.snapshot()["strategyqa"]
    assert new.version == new_version != old.version
    want = {v.version: service_scores(base, v, text) for v in (old, new)}
    assert want[old.version] != want[new.version]
    seen = set()
    for body in results:
        rows = [p for p in body["predictions"] if p["task"] == "strategyqa"]
        assert len({p["version"] for p in rows}) == 1  # one version per response
        for p in rows:  # and the scores are that version's: label and tensor never mixed
            assert [round(s, 4) for s in p["scores"].values()] == want[p["version"]]
        seen.add(rows[0]["version"])
    assert seen == {old.version, new_version}


def service_scores(base, loaded, text: str) -> list[float]:
    model = MultiPromptModel(base)
    model.add(loaded.spec, loaded.prompt, loaded.meta, loaded.version)
    return [round(s, 4) for s in model.predict([Row(loaded.name, text)])[0].scores.values()]


def test_chunked_body_over_the_limit_is_413(served):
    _, url, _, _ = served

    def chunks():
        yield b'{"task": "intent", "inputs": ["'
        for _ in range(20):
            yield b"x" * 100
        yield b'"]}'

    resp = httpx.post(f"{url}/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "larger than 1500 bytes" in resp.json()["detail"]


def test_an_ensemble_champion_is_served_as_one_version_of_its_task(served):
    """`ptune train --ensemble K --register` makes one version holding K prompts; the server follows the alias
    to it, answers with the ensemble's combined scores and lists it with its K and method."""
    from ptune.evaluation.ensemble import member_scores
    from ptune.model.artifacts import PromptMeta
    from ptune.model.ensemble_artifact import save_ensemble

    service, url, tmp, base = served
    spec = get_task("rotten_tomatoes")
    gen = torch.Generator().manual_seed(5)
    prompts = torch.randn(3, 4, base.hidden_size, generator=gen) * 0.5
    metas = [PromptMeta(task=spec.name, base_spec=base.spec, base_fingerprint=base.fingerprint,
                        train_config={"seed": i}) for i in range(3)]
    directory = save_ensemble(tmp / "ensemble-rotten", list(prompts), metas, "vote")
    version = model_registry.register_dir(directory, spec).version
    model_registry.set_alias(spec.name, "champion", version)
    deadline = time.monotonic() + 20
    while service.model.snapshot()[spec.name].version != str(version) and time.monotonic() < deadline:
        time.sleep(0.1)
    listed = {t["task"]: t for t in httpx.get(f"{url}/v1/tasks").json()}[spec.name]
    assert (listed["version"], listed["ensemble"], listed["method"]) == (str(version), 3, "vote")
    text = "a witty and gorgeous film"
    body = httpx.post(f"{url}/v1/predict", json={"task": spec.name, "inputs": [text]}).json()["predictions"][0]
    expected = member_scores(base, spec, [format_input(spec, text)], prompts)[0].mean(0)
    assert body["version"] == str(version)
    assert [round(v, 4) for v in body["scores"].values()] == [round(v, 4) for v in expected.tolist()]


@pytest.mark.parametrize(("precision", "held"), [("bf16", {torch.bfloat16}), ("fp32", {torch.float32}),
                                                 ("auto", {torch.float32})])  # auto: a tiny model stays fp32
def test_the_server_computes_in_evaluate_precision(tiny_causal_dir, precision, held):
    from ptune.config import params_from_dict
    from ptune.serving.server import served_model

    model = served_model(params_from_dict({"model": str(tiny_causal_dir), "evaluate": {"precision": precision}}))
    assert {p.dtype for p in model.base.model.parameters()} == held
    assert model.precision_name == ("bf16" if precision == "bf16" else "fp32")


def _health_until(url: str, done, seconds: float = 20.0) -> dict:
    """GET /health until `done(reply)` holds or the deadline passes (the watcher polls every 0.2 s)."""
    deadline = time.monotonic() + seconds
    while True:
        reply = httpx.get(f"{url}/health").json()
        if done(reply) or time.monotonic() > deadline:
            return reply


def test_health_and_tasks_say_degraded_while_the_alias_points_at_a_refused_version(served):
    service, url, tmp, base = served
    bad = publish(tmp, base, "xsum", 2, seed=60, fingerprint="e" * 64)  # @champion -> a version it must refuse
    health = _health_until(url, lambda h: "refused" in (h["versions"]["xsum"]["problem"] or ""))
    xsum = health["versions"]["xsum"]
    assert health["status"] == "degraded" and (xsum["served"], xsum["aliased"], xsum["status"]) == ("1", bad, "degraded")
    assert f"version {bad} refused" in xsum["problem"] and "fingerprint" in xsum["problem"]
    info = {t["task"]: t for t in httpx.get(f"{url}/v1/tasks").json()}["xsum"]
    assert (info["version"], info["alias_version"], info["status"]) == ("1", bad, "degraded")
    model_registry.set_alias("xsum", "champion", "1")
    health = _health_until(url, lambda h: h["status"] == "ok")
    assert health["status"] == "ok" and health["versions"]["xsum"] == {"served": "1", "aliased": "1",
                                                                        "status": "ok", "problem": None}


def until(condition, message: str, seconds: float = 30) -> None:
    """Poll `condition` against a deadline (no fixed sleep stands in for the event)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
