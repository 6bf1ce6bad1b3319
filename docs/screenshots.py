"""Screenshots for the README: the Prefect UI (the train deployment's run form, a flow run (graph) and its
summary artifact) and the MLflow UI (a training run with its tags and dataset, a model version with its
schema, metrics and aliases). Headless Debian Chromium (/usr/bin/chromium) driven by Playwright for Python;
no browser download (`playwright install` is never needed).

    make up                              # or any server with a finished train-task run
    .venv/bin/python docs/screenshots.py --api http://127.0.0.1:4200/api --out docs/img
    make mlflow-ui                       # after `make run`
    .venv/bin/python docs/screenshots.py --mlflow http://127.0.0.1:5000 --task rotten_tomatoes --out docs/img

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


def mlflow_pages(ui: str, task: str) -> dict[str, str]:
    """name -> UI path: the training run behind `ptune-<task>@champion` (or its newest version), and that version."""
    def get(path: str, **params: str) -> dict:
        response = httpx.get(f"{ui}/api/2.0/mlflow/{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    name = f"ptune-{task}"
    try:
        version = get("registered-models/alias", name=name, alias="champion")["model_version"]
    except httpx.HTTPStatusError:
        version = max(get("model-versions/search", filter=f"name='{name}'")["model_versions"],
                      key=lambda v: int(v["version"]))
    run = get("runs/get", run_id=version["run_id"])["run"]
    return {"run": f"/#/experiments/{run['info']['experiment_id']}/runs/{version['run_id']}",
            "version": f"/#/models/{name}/versions/{version['version']}"}


def shoot(base: str, pages_by_name: dict[str, str], out: Path, prefix: str, width: int = 1400, height: int = 1000,
          wait_ms: int = 8000) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height})
        for name, path in pages_by_name.items():
            page.goto(f"{base}{path}", wait_until="load", timeout=60_000)
            page.wait_for_timeout(wait_ms)  # the UI renders after its API calls return
            target = out / f"{prefix}-{name}.png"
            page.screenshot(path=str(target), full_page=True)
            written.append(target)
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:4200/api")
    parser.add_argument("--mlflow", help="MLflow UI address: shoot MLflow pages instead of Prefect's")
    parser.add_argument("--task", default="rotten_tomatoes", help="with --mlflow: whose run and version to show")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    if args.mlflow:
        written = shoot(args.mlflow, mlflow_pages(args.mlflow, args.task), args.out, "mlflow-make-run")
    else:
        written = shoot(args.api.removesuffix("/api"), pages(args.api), args.out, "prefect")
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
