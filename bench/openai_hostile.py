"""Hostile inputs for a live `ptune serve` OpenAI route (bench/bench_openai.py runs them after its load): each
must get its 4xx, and a valid request afterwards its 200 (the server kept serving)."""

from __future__ import annotations

import json


def hostile_cases(key: str) -> dict[str, tuple[dict, tuple[int, ...]]]:
    """name -> (httpx.post keyword arguments for /v1/completions, the statuses that are right for it)."""
    good, auth = {"model": "cls0", "prompt": "a witty film"}, {"Authorization": f"Bearer {key}"}
    raw = {**auth, "Content-Type": "application/json"}
    return {
        "malformed_json": ({"content": b'{"model": "cls0", "prompt": ', "headers": raw}, (400, 422)),
        "body_5mb": ({"content": json.dumps({**good, "prompt": "a" * 5_000_000}).encode(), "headers": raw},
                     (413,)),
        "inputs_1000": ({"json": {**good, "prompt": ["a witty film"] * 1000}, "headers": auth}, (400,)),
        "input_100k_chars": ({"json": {**good, "prompt": "witty " * 16_667}, "headers": auth}, (400,)),
        "non_utf8": ({"content": b'{"model": "cls0", "prompt": "\xff\xfe\xc3("}', "headers": raw},
                     (400, 422)),
        "unknown_model": ({"json": {**good, "model": "no-such-model"}, "headers": auth}, (404,)),
        "wrong_key": ({"json": good, "headers": {"Authorization": "Bearer wrong-key"}}, (401,)),
        "still_serving": ({"json": good, "headers": auth}, (200,)),  # last: the server kept serving
    }


def hostile_checks(url: str, key: str) -> dict[str, dict]:
    """Each hostile input's status (or the client-side exception) against the statuses expected for it."""
    import httpx

    found = {}
    with httpx.Client(timeout=120) as http:
        for name, (kwargs, expected) in hostile_cases(key).items():
            try:
                status: int | str = http.post(f"{url}/v1/completions", **kwargs).status_code
            except httpx.HTTPError as exc:
                status = f"{type(exc).__name__}: {exc}"
            found[name] = {"status": status, "expected": list(expected), "ok": status in expected}
    return found
