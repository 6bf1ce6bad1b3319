"""The OpenAI-compatible routes of `ptune serve`, driven by the official `openai` client against a live server on
127.0.0.1 with an API key: the model list, completions of a classification and a generation task, chat, a
two-field task, streams that add up to the non-streamed text, and every error as the client's exception."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time

import httpx
import openai
import pytest

from ptune.config import Params
from ptune.data.catalog import get_task
from ptune.model.generate import cut_at_stop
from ptune.serving.app import Service, create_app
from tests.ptune.serving.conftest import SETTINGS
from tests.ptune.serving.helpers import running, serving

KEY = "sk-test-0123456789"
TASKS = {"rotten_tomatoes": 3, "xsum": 2, "boolq_offline": 4}  # classification, generation, two input fields
SAMPLED = {"temperature": 0.9, "top_p": 0.9, "seed": 3, "max_tokens": 12}


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_causal_dir):
    """(service, base URL) of a server with an API key on the champions of TASKS."""
    settings = dataclasses.replace(SETTINGS, api_key=KEY, poll_seconds=0)
    with serving(tmp_path_factory.mktemp("serve-openai"), tiny_causal_dir, TASKS, settings, seed=50) as (service, url, _):
        yield service, url


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def predict(url: str, task: str, text) -> dict:
    body = {"task": task, "inputs": [text]}
    resp = httpx.post(f"{url}/v1/predict", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    return resp.raise_for_status().json()["predictions"][0]


def test_models_list_every_task_three_ways(live):
    _, url = live
    ids = {m.id for m in client(url).models.list()}
    assert ids == {form for t in TASKS for form in (t, f"ptune-{t}@champion", f"ptune-{t}/1")}
    assert client(url).models.retrieve("ptune-xsum/1").owned_by == "ptune"


def test_classification_completion_is_the_label_with_every_labels_logprob(live):
    _, url = live
    want = predict(url, "rotten_tomatoes", "a witty film")
    got = client(url).completions.create(model="rotten_tomatoes", prompt="a witty film", logprobs=1)
    choice = got.choices[0]
    assert choice.text == want["label"] and choice.finish_reason == "stop" and got.model == "ptune-rotten_tomatoes/1"
    assert choice.logprobs.tokens == [want["label"]] and choice.logprobs.text_offset == [0]
    assert choice.logprobs.token_logprobs[0] == pytest.approx(max(want["scores"].values()), abs=1e-5)
    assert choice.logprobs.top_logprobs[0] == pytest.approx(want["scores"], abs=1e-5)
    assert got.usage.prompt_tokens > 0
    many = client(url).completions.create(model="rotten_tomatoes", prompt=["a witty film", "dull"])
    assert [c.text for c in many.choices][0] == want["label"] and [c.index for c in many.choices] == [0, 1]


def test_generation_completion_honours_max_tokens_stop_and_seed(live):
    _, url = live
    text = "a long article about the weather in town"
    greedy = client(url).completions.create(model="xsum", prompt=text).choices[0].text
    assert greedy == predict(url, "xsum", text)["label"] != ""  # greedy: the text /v1/predict generates
    short = client(url).completions.create(model="xsum", prompt=text, max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    stop = greedy[len(greedy) // 2]
    cut = client(url).completions.create(model="xsum", prompt=text, stop=[stop]).choices[0]
    assert cut.text == cut_at_stop(greedy, [*get_task("xsum").stop_strings, stop]) and cut.finish_reason == "stop"
    one, two = (client(url).completions.create(model="xsum", prompt=text, **SAMPLED).choices[0].text for _ in "12")
    assert one == two != greedy


def test_chat_reads_the_last_user_message_and_a_two_field_task_takes_json(live):
    _, url = live
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "dull"},
                {"role": "assistant", "content": "negative"}, {"role": "user", "content": "a witty film"}]
    got = client(url).chat.completions.create(model="ptune-rotten_tomatoes@champion", messages=messages,
                                              logprobs=True)
    want = predict(url, "rotten_tomatoes", "a witty film")
    assert got.choices[0].message.content == want["label"] and got.choices[0].message.role == "assistant"
    top = {t.token: t.logprob for t in got.choices[0].logprobs.content[0].top_logprobs}
    assert top == pytest.approx(want["scores"], abs=1e-5)
    fields = {"question": "is the sky green", "passage": "The sky is blue."}
    two = client(url).completions.create(model="boolq_offline", prompt=json.dumps(fields))
    assert two.choices[0].text == predict(url, "boolq_offline", fields)["label"]
    with pytest.raises(openai.BadRequestError, match="input fields"):
        client(url).completions.create(model="boolq_offline", prompt="is the sky green")


@pytest.mark.parametrize("options", [{}, SAMPLED], ids=["greedy", "sampled"])
def test_streams_add_up_to_the_non_streamed_text(live, options):
    _, url = live
    text = "storms are coming to the coast"
    whole = client(url).completions.create(model="xsum", prompt=text, **options).choices[0].text
    chunks = list(client(url).completions.create(model="xsum", prompt=text, stream=True, **options))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert sum(bool(c.choices[0].text) for c in chunks) > 1 and chunks[-1].choices[0].finish_reason
    messages = [{"role": "user", "content": text}]
    chat = client(url).chat.completions.create(model="xsum", messages=messages, **options)
    pieces = list(client(url).chat.completions.create(model="xsum", messages=messages, stream=True,
                                                      stream_options={"include_usage": True}, **options))
    assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == chat.choices[0].message.content
    assert pieces[-1].usage.completion_tokens == chat.usage.completion_tokens
    label = list(client(url).completions.create(model="rotten_tomatoes", prompt="dull", stream=True))
    assert "".join(c.choices[0].text for c in label) == predict(url, "rotten_tomatoes", "dull")["label"]


def test_every_v1_route_needs_the_key_and_the_rest_stay_open(live):
    _, url = live
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        client(url, key="sk-wrong").models.list()
    for path in ("/v1/models", "/v1/tasks"):
        resp = httpx.get(f"{url}{path}")
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/v1/models").json()["error"]["code"] == "invalid_api_key"
    assert httpx.post(f"{url}/v1/predict", json={"task": "xsum", "inputs": ["x"]}).status_code == 401
    assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/metrics").status_code == 200


@pytest.mark.parametrize("call, error, message, param", [
    (dict(model="nope", prompt="x"), openai.NotFoundError, "served models", "model"),
    (dict(model="ptune-xsum/9", prompt="x"), openai.NotFoundError, "ptune-xsum/1", "model"),
    (dict(model="xsum", prompt="x", n=2), openai.BadRequestError, "n must be 1", "n"),
    (dict(model="xsum", prompt="x", temperature=5), openai.BadRequestError, "less than or equal to 2", "temperature"),
    (dict(model="xsum", prompt="x", logprobs=2), openai.BadRequestError, "classification tasks", "logprobs"),
    (dict(model="xsum", prompt="x", extra_body={"tools": []}), openai.BadRequestError, "Extra inputs", "tools"),
    (dict(model="xsum", prompt="x" * 201), openai.BadRequestError, "at most 200 characters", "prompt"),
    (dict(model="xsum", prompt="x", frequency_penalty=1), openai.BadRequestError, "penalties", "frequency_penalty"),
])
def test_errors_are_openai_error_objects(live, call, error, message, param):
    _, url = live
    with pytest.raises(error, match=message) as raised:
        client(url).completions.create(**call)
    assert raised.value.body["param"] == param and raised.value.body["type"]


def test_missing_field_oversize_body_and_no_user_message(live):
    _, url = live
    resp = httpx.post(f"{url}/v1/completions", json={"model": "xsum"}, headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "prompt"
    with pytest.raises(openai.APIStatusError) as raised:
        client(url).completions.create(model="xsum", prompt=["x" * 190] * 8)
    assert raised.value.status_code == 413 and raised.value.body["code"] == "request_too_large"
    with pytest.raises(openai.BadRequestError, match="no user message"):
        client(url).chat.completions.create(model="xsum", messages=[{"role": "system", "content": "hi"}])


@pytest.mark.parametrize("body", [b'{"model": "xsum", "prompt": ', b'{"model": "xsum", "prompt": "\xff\xfe"}'],
                         ids=["malformed-json", "not-utf8"])
def test_a_body_that_is_not_json_is_400_naming_the_body(live, body):
    _, url = live
    for path in ("/v1/completions", "/v1/chat/completions"):
        resp = httpx.post(f"{url}{path}", content=body, headers={"Authorization": f"Bearer {KEY}",
                                                                  "Content-Type": "application/json"})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == "body" and resp.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("scheduler", ["continuous", "static"])
def test_a_full_queue_is_503_with_retry_after(live, scheduler):
    """The test holds the model, so the first request waits; with --max-queue 1 the next one is refused."""
    service, _ = live
    busy = Service(service.model, dataclasses.replace(service.settings, max_queue=1, scheduler=scheduler))
    with running(create_app(busy)) as url:
        first = threading.Thread(target=client(url).completions.create, kwargs={"model": "xsum", "prompt": "x"})
        with service.model.compute():  # the gate: no pass can start until the test lets go
            first.start()
            deadline = time.monotonic() + 30
            while busy.batcher.pending < 1:
                assert time.monotonic() < deadline, "the first request never reached the queue"
                time.sleep(0.01)
            with pytest.raises(openai.InternalServerError) as raised:
                client(url).completions.create(model="rotten_tomatoes", prompt="fine")
        first.join(timeout=60)
    busy.close()
    assert raised.value.status_code == 503 and raised.value.response.headers["retry-after"] == "1"
    assert raised.value.body["code"] == "overloaded"


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian package `chromium` missing: `make setup` installs it (apt-get)")
def test_the_playground_asks_for_the_key_once(live):
    """With --api-key the page's first /v1 call gets 401; it asks for the key, then lists the tasks."""
    from playwright.sync_api import sync_playwright

    from tests.ptune.serving.test_playground import ARGS, CHROMIUM

    _, url = live
    asked = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept(KEY)))
            page.goto(url)
            page.wait_for_selector("#task option[value=xsum]", state="attached")
        finally:
            browser.close()
    assert len(asked) == 1 and "API key" in asked[0]


def test_api_key_from_the_environment_and_the_warning_without_one(monkeypatch, caplog):
    """PTUNE_API_KEY reaches the settings (never their repr); 0.0.0.0 without a key is warned about, with one not."""
    from typer.testing import CliRunner

    from ptune.cli import app
    from ptune.errors import ConfigError
    from ptune.serving import server
    from ptune.serving.settings import ServeSettings

    seen = []
    monkeypatch.setattr(server, "build_service", lambda params, tasks, settings: seen.append(settings))
    monkeypatch.setattr(server, "create_app", lambda service: None)
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: None)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env={"PTUNE_API_KEY": KEY})
    assert result.exit_code == 0, result.output
    assert seen[-1].api_key == KEY and KEY not in repr(seen[-1])
    for key, warned in ((None, True), (KEY, False)):
        caplog.clear()
        server.serve(Params(), [], ServeSettings(host="0.0.0.0", api_key=key))
        assert ("no authentication" in caplog.text) is warned
    with pytest.raises(ConfigError, match="--api-key"):
        ServeSettings(api_key="two words")
