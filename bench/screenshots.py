"""The Prefect and MLflow screenshots of docs/prefect.md and docs/mlflow.md, taken on a toy project.

Not a benchmark. It builds a throwaway project the way tests/flows/test_stack.py does (the tests' toy user
task `toy`, 60 rows, and the tiny random Llama of tests/tiny_models.py, 6 training steps), starts the stack with
`python -m flows.stack up --workers 1 --mlflow-port ...` (Prefect server, deployments, one worker, MLflow UI; its
own PREFECT_HOME, so ~/.prefect is untouched), runs `train-task/train` for `toy` through the Prefect API, waits
for it, and drives headless Chromium (Debian's /usr/bin/chromium, Playwright) over the UIs:

- prefect_form_empty_fields.png  the deployment's custom-run form (deployment page -> Run -> Custom run):
                                 the training overrides are empty, "Empty = the task's own value"
- prefect_train_summary.png      the flow run's `train-toy` markdown artifact: results table, MLflow links
- mlflow_experiment_runs.png     the MLflow experiment `ptune/toy`, opening on its runs table
- mlflow_model_version.png       version 1 of `ptune-toy` with its tags

It checks what the pictures claim and prints a report: every input of the form's `train` section is empty,
the artifact's MLflow links point at the MLflow UI that runs (PTUNE_MLFLOW_UI) and answer HTTP 200, and the
run link opens the run's page. The stack is stopped (`flows.stack down`) whatever happens.

    PTUNE_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/screenshots.py --out docs/img

About 3-6 minutes on 2 busy cores. `--project DIR --keep` reuses a project dir and leaves the stack running
(to iterate on the pictures; `python -m flows.stack down --project DIR` stops it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import build_project, free_port, project_env_vars  # noqa: E402
from tests.tiny_models import build_causal  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDTH = 1280


def make_project(root: Path) -> Path:
    """The tests' toy project under root/project with the tiny model under root/tiny-llama."""
    if (root / "project" / "params.yaml").exists():
        return root / "project"
    model = build_causal(root / "tiny-llama")
    project = build_project(root / "project", model)
    for name in ("flows", "tasks"):
        (project / name).symlink_to(REPO / name)
    return project


def stack_env(project: Path) -> dict[str, str]:
    env = {**os.environ, **project_env_vars(project), "PREFECT_HOME": str(project.parent / "prefect-home"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "WARNING", "OMP_NUM_THREADS": "1",
           "PTUNE_THREADS": "1", "PTUNE_TZ": "UTC", "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    env.pop("PTUNE_MLFLOW_UI", None)
    return env


def stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.stack", *args, "--project", env["PTUNE_PROJECT_DIR"]],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def wait_http(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer 200 within {seconds:.0f} s")
        time.sleep(0.5)


def train_toy(api: str, seconds: float = 900):
    """Run `train-task/train` for toy through the API; returns (flow run, deployment id, artifact id)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("train-task/train")
        run = client.create_flow_run_from_deployment(deployment.id, parameters={"params": {"task": "toy"}})
        deadline = time.monotonic() + seconds
        while not (run := client.read_flow_run(run.id)).state.is_final():
            if time.monotonic() > deadline:
                raise SystemExit(f"flow run {run.name} still {run.state.name} after {seconds:.0f} s")
            time.sleep(2)
        if not run.state.is_completed():
            raise SystemExit(f"flow run {run.name} ended {run.state.name}: {run.state.message}")
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[run.id])))
        summary = [a for a in found if a.key == "train-toy"]
        if not summary:
            raise SystemExit(f"no train-toy artifact on {run.name}: {[a.key for a in found]}")
        return run, deployment.id, summary[0].id


def shoot(prefect: str, mlflow: str, deployment_id, run_id, artifact_id, out: Path) -> dict:
    """Take the four screenshots; returns what was checked on the way."""
    from playwright.sync_api import expect, sync_playwright

    report: dict = {}
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.set_default_timeout(60_000)

            # 1. deployment page -> Run -> Custom run
            page.goto(f"{prefect}/deployments/deployment/{deployment_id}")
            page.get_by_role("button", name=re.compile(r"^\s*Run\s*$")).first.click()
            page.get_by_text("Custom run", exact=True).click()
            page.wait_for_url(re.compile(r"/run"))
            page.get_by_text("Empty = the task's own value").first.wait_for()
            report["form_url"] = page.url
            report["form_inputs"] = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
                .filter(e => e.offsetParent !== null && e.type !== 'hidden')
                .map(e => ({name: e.name || e.id || e.getAttribute('aria-label') || '', type: e.type,
                            value: e.type === 'checkbox' ? String(e.checked) : e.value,
                            label: (e.closest('.p-label, label, [class*=label]')?.innerText || '').slice(0, 60)}))""")
            page.screenshot(path=str(out / "prefect_form_empty_fields.png"), full_page=True)

            # 2. the train-toy artifact
            page.goto(f"{prefect}/artifacts/artifact/{artifact_id}")
            page.get_by_role("heading", name=re.compile("Test results")).first.wait_for()
            links = page.eval_on_selector_all("a[href]", "as => as.map(a => [a.innerText, a.href])")
            report["artifact_mlflow_links"] = [[text, href] for text, href in links if "/#/" in href
                                               or "get-artifact" in href]
            report["artifact_images"] = page.eval_on_selector_all(
                "img", "is => is.map(i => [i.src, i.complete && i.naturalWidth > 0])")
            page.screenshot(path=str(out / "prefect_train_summary.png"), full_page=True)
            checked = []
            for text, href in report["artifact_mlflow_links"]:
                checked.append({"link": text, "href": href, "on_ui": href.startswith(mlflow + "/"),
                                "status": page.request.get(href).status})
            report["link_checks"] = checked

            # the run link opens the MLflow run page in the browser (the hash route, not only the HTTP 200)
            run_link = next(href for text, href in report["artifact_mlflow_links"] if text.startswith("run "))
            mlpage = browser.new_page(viewport={"width": WIDTH, "height": 900})
            mlpage.goto(run_link)
            expect(mlpage.get_by_text("train-toy").first).to_be_visible(timeout=60_000)
            report["run_link_opens_run_page"] = True

            # 3. the experiment page
            experiment_id = re.search(r"#/experiments/(\d+)", run_link).group(1)
            mlpage.goto(f"{mlflow}/#/experiments/{experiment_id}")
            mlpage.get_by_role("link", name="train-toy").first.wait_for()
            report["experiment_url"] = mlpage.url
            mlpage.screenshot(path=str(out / "mlflow_experiment_runs.png"))

            # 4. the model version page
            version_link = next(href for text, href in report["artifact_mlflow_links"] if text.startswith("model "))
            mlpage.goto(version_link)
            mlpage.get_by_text("prompt_sha256").first.wait_for()
            mlpage.screenshot(path=str(out / "mlflow_model_version.png"), full_page=True)
        finally:
            browser.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--project", type=Path, default=None, help="work dir to (re)use; default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="leave the stack running and the work dir in place")
    args = parser.parse_args()
    root = (args.project or Path(tempfile.mkdtemp(prefix="ptune-shots-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    project = make_project(root)
    env = stack_env(project)
    state = root / "ports.json"
    ports = json.loads(state.read_text()) if state.exists() else {"prefect": free_port(), "mlflow": free_port()}
    state.write_text(json.dumps(ports))
    prefect, mlflow = f"http://127.0.0.1:{ports['prefect']}", f"http://127.0.0.1:{ports['mlflow']}"
    try:
        started = stack(env, "up", "--port", str(ports["prefect"]), "--workers", "1",
                        "--mlflow-port", str(ports["mlflow"]))
        print(started.stdout.strip())
        if started.returncode != 0:
            raise SystemExit(f"flows.stack up failed:\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}")
        wait_http(f"{mlflow}/health")
        t0 = time.monotonic()
        run, deployment_id, artifact_id = train_toy(f"{prefect}/api")
        print(f"flow run {run.name} {run.state.name} in {time.monotonic() - t0:.0f} s")
        report = shoot(prefect, mlflow, deployment_id, run.id, artifact_id, args.out)
        print(json.dumps(report, indent=1, default=str))
    finally:
        if not args.keep:
            print(stack(env, "down").stdout.strip())
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"stack left up: {prefect} {mlflow}; python -m flows.stack down --project {project}")


if __name__ == "__main__":
    main()
