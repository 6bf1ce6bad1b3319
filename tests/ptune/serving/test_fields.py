"""Inputs with several fields over HTTP: an object with a task's input fields is formatted as `prepare`
formats a training row with those fields (and answered as that source would be), a plain string still means
the first column, a missing or unknown field is a 422 that names it and the fields expected without echoing
the text, and GET /v1/tasks gives each task's alias, input fields and test score beside the best baseline's."""

from __future__ import annotations

import httpx
import pytest
import torch

from ptune.data.catalog import get_task
from ptune.serving.multi_prompt import Row
from tests.ptune.serving.helpers import SCORE_TOL

QUESTION, PASSAGE = "is the sky green", "The sky is blue on a clear day."


def assert_same(got: dict, want) -> None:
    assert (got["label"], got["version"]) == (want.label, want.version)
    torch.testing.assert_close(torch.tensor([got["scores"][w] for w in want.scores]),
                               torch.tensor(list(want.scores.values())), **SCORE_TOL)


def test_an_object_input_is_formatted_as_a_training_row(served_fields):
    service, url = served_fields
    fields = {"question": QUESTION, "passage": PASSAGE}
    source = get_task("boolq_offline").formatter({**fields, "answer": "true"})[0]  # how prepare formats the row
    [want] = service.model.predict([Row("boolq_offline", source, raw=True)])
    one = httpx.post(f"{url}/v1/predict", json={"task": "boolq_offline", "inputs": [fields]})
    assert one.status_code == 200, one.text
    mixed = httpx.post(f"{url}/v1/batch", json={"inputs": [{"task": "rotten_tomatoes", "text": "a witty film"},
                                                           {"task": "boolq_offline", "text": fields}]})
    assert mixed.status_code == 200, mixed.text
    assert_same(one.json()["predictions"][0], want)
    assert_same(mixed.json()["predictions"][1], want)


def test_a_string_still_means_the_first_column(served_fields):
    service, url = served_fields
    [want] = service.model.predict([Row("rotten_tomatoes", "a witty film")])
    body = {"task": "rotten_tomatoes", "inputs": ["a witty film", {"text": "a witty film"}]}
    got = httpx.post(f"{url}/v1/predict", json=body).json()["predictions"]
    assert_same(got[0], want)
    assert_same(got[1], want)


@pytest.mark.parametrize("path, item, field, what", [
    ("predict", {"question": "secret-text"}, "inputs.0.passage", "missing"),
    ("predict", {"question": "secret-text", "passage": "secret-text", "title": "secret-text"}, "inputs.0.title",
     "unknown field"),
    ("batch", {"passage": "secret-text"}, "inputs.0.text.question", "missing"),
])
def test_a_missing_or_unknown_field_is_a_422_naming_it(served_fields, path, item, field, what):
    _, url = served_fields
    body = ({"task": "boolq_offline", "inputs": [item]} if path == "predict"
            else {"inputs": [{"task": "boolq_offline", "text": item}]})
    resp = httpx.post(f"{url}/v1/{path}", json=body)
    assert resp.status_code == 422 and "secret-text" not in resp.text
    [problem] = resp.json()["detail"]
    assert problem["field"] == field
    assert problem["msg"] == f"{field}: {what}; task 'boolq_offline' expects the fields ['question', 'passage']"


def test_raw_with_an_object_and_a_wrong_type_are_422(served_fields):
    _, url = served_fields
    resp = httpx.post(f"{url}/v1/predict", json={"task": "boolq_offline", "raw": True,
                                                  "inputs": [{"question": "q", "passage": "p"}]})
    assert resp.status_code == 422 and "raw takes the formatted source as a string" in resp.text
    resp = httpx.post(f"{url}/v1/predict", json={"task": "boolq_offline", "inputs": [3]})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["msg"] == "inputs.0: Input should be a string or an object of the task's fields"


def test_tasks_give_alias_input_fields_and_score_vs_best_baseline(served_fields):
    _, url = served_fields
    tasks = {t["task"]: t for t in httpx.get(f"{url}/v1/tasks").json()}
    boolq = tasks["boolq_offline"]
    assert (boolq["alias"], boolq["version"], boolq["inputs"]) == ("challenger", "1", ["question", "passage"])
    assert boolq["score"] == {"metric": "test/accuracy", "value": pytest.approx(0.82), "baseline": 0.77}
    assert tasks["rotten_tomatoes"]["inputs"] == ["text"]
