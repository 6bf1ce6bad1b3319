"""Screenshots of the Prefect UI for the README: the train deployment's run form, a flow run (graph) and its
summary artifact. Headless Debian Chromium (/usr/bin/chromium) driven by Playwright for Python; no browser
download (`playwright install` is never needed).

    make up                              # or any server with a finished train-task run
    .venv/bin/python docs/screenshots.py --api http://127.0.0.1:4200/api --out docs/img

Needs `pip install playwright` (dev extra) and `apt-get install chromium`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx

CHROMIUM = "/usr/bin/chromium"


def _post(api: str, path: str, body: dict) -> list[dict]:
    response = httpx.post(f"{api}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def pages(api: str) -> dict[str, str]:
    """name -> UI path: the run form of train-task/train, the latest train-task flow run, its summary artifact."""
    deployment = httpx.get(f"{api}/deployments/name/train-task/train", timeout=30).json()
    found = {"form": f"/deployments/deployment/{deployment['id']}/run"}
    runs = _post(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}},
                                            "sort": "START_TIME_DESC", "limit": 1})
    runs = runs or _post(api, "/flow_runs/filter", {"flows": {"name": {"any_": ["train-task"]}},
                                                    "sort": "START_TIME_DESC", "limit": 1})
    if runs:
        found["flow-run"] = f"/runs/flow-run/{runs[0]['id']}"
        artifacts = _post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]},
                                                                   "type": {"any_": ["markdown"]}}, "limit": 5})
        summary = [a for a in artifacts if (a.get("key") or "").startswith("train-")]
        if summary:
            found["artifact"] = f"/artifacts/artifact/{summary[0]['id']}"
    return found


def shoot(api: str, out: Path, width: int = 1400, height: int = 1000, wait_ms: int = 4000) -> list[Path]:
    from playwright.sync_api import sync_playwright

    ui = api.removesuffix("/api")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height})
        for name, path in pages(api).items():
            page.goto(f"{ui}{path}", wait_until="networkidle", timeout=60_000)
            page.wait_for_timeout(wait_ms)  # the UI renders after its API calls return
            target = out / f"prefect-{name}.png"
            page.screenshot(path=str(target), full_page=True)
            written.append(target)
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:4200/api")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    for path in shoot(args.api, args.out):
        print(path)


if __name__ == "__main__":
    main()
