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

It checks what the pictures claim, prints a report and exits 1 on a problem: no number input of the form is
pre-filled, and what the form submits with only `task` chosen carries no override (the work pool is paused
meanwhile and that run deleted); the artifact's MLflow links point at the MLflow UI that runs (PTUNE_MLFLOW_UI)
and answer HTTP 200, its chart loads, and the run link opens the run's page; where the experiment's bare
address `#/experiments/<id>` lands in a fresh browser. The stack is stopped (`flows.stack down`) whatever happens.

Pages that scroll inside a container are shot whole by growing the window (`tall_shot`); the artifact's page is
widened until its results table fits (up to 2000 px); MLflow's Assistant panel is closed, its sidebar switched
to "Model training", and the version page's model card folded and tags table unfolded.

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
MAX_WIDTH = 2000


def make_project(root: Path) -> Path:
    """The tests' toy project under root/project with the tiny model under root/tiny-llama."""
    if (root / "project" / "params.yaml").exists():
        return root / "project"
    model = build_causal(root / "tiny-llama")
    project = build_project(root / "project", model)
    for name in ("flows", "tasks"):
        (project / name).symlink_to(REPO / name)
    _move_instructions(project / "params.yaml")
    return project


def _move_instructions(params_file: Path) -> None:
    """Move each task entry's `instruction` to `evaluate.instructions` where this ptune refuses it in the entry
    (ptune/data/user_tasks.py MOVED), for a tests/support.py that still writes it there."""
    from ptune.data import user_tasks

    if "instruction" not in getattr(user_tasks, "MOVED", {}):
        return
    params = yaml.safe_load(params_file.read_text())
    moved = {name: entry.pop("instruction") for name, entry in params["tasks"].items() if "instruction" in entry}
    if moved:
        params["evaluate"]["instructions"] = {**params["evaluate"].get("instructions", {}), **moved}
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))


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


TALL = """() => {  // how much taller than the window the page's scrolling container is
  let extra = document.documentElement.scrollHeight - window.innerHeight;
  for (const e of document.querySelectorAll('*')) {
    const y = getComputedStyle(e).overflowY;
    if ((y === 'auto' || y === 'scroll') && e.clientHeight > 300) extra = Math.max(extra, e.scrollHeight - e.clientHeight);
  }
  return extra;
}"""


WIDE = """() => Math.max(0, ...[...document.querySelectorAll('*')].filter(e => ['auto', 'scroll'].includes(
  getComputedStyle(e).overflowX)).map(e => e.scrollWidth - e.clientWidth))"""
UNFOLD = """text => {  // a table that scrolls inside the page (MLflow's tags table shows ~4 rows): show it whole
  for (const e of document.querySelectorAll('*')) {
    const y = getComputedStyle(e).overflowY;
    if ((y === 'auto' || y === 'scroll') && e.tagName !== 'MAIN' && e.scrollHeight > e.clientHeight
        && e.innerText.includes(text)) { e.style.maxHeight = 'none'; e.style.height = 'auto'; }
  }
}"""


def tall_shot(page, path: Path, max_height: int = 4000) -> None:
    """The whole page, when it scrolls inside a container (Prefect's and MLflow's layouts): `full_page` only
    sees the window, so the window grows by what the container hides, up to `max_height`."""
    size = page.viewport_size
    extra = page.evaluate(TALL)
    if extra > 0:
        page.set_viewport_size({"width": size["width"], "height": min(size["height"] + extra, max_height)})
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def close_assistant(page) -> None:
    """MLflow 3.17's "MLflow Assistant" side panel covers a third of the page: close it when it is there."""
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()
        close.first.wait_for(state="detached")


def submitted_form(api: str, page, form_url: str) -> dict:
    """The parameters the custom-run form submits with only `task` filled in (the URL carries {"params": {"task":
    "toy"}}, as the UI's own links do); the pool is paused so no worker takes the run, which is deleted at once."""
    from urllib.parse import quote

    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        client.update_work_pool("ptune-process", WorkPoolUpdate(is_paused=True))
        try:
            base = form_url.split("?")[0]
            page.goto(f"{base}?parameters={quote(quote(json.dumps({'params': {'task': 'toy'}})))}")
            page.get_by_text("Empty = the task's own value").first.wait_for()
            with page.expect_response(lambda r: r.url.endswith("/create_flow_run")) as created:
                page.get_by_role("button", name="Submit").click()
            if created.value.status != 201:
                raise SystemExit(f"the form's run was refused: {created.value.status} {created.value.text()[:500]}")
            run_id = created.value.json()["id"]
            sent = client.read_flow_run(run_id).parameters
            client.delete_flow_run(run_id)
            return sent
        finally:
            client.update_work_pool("ptune-process", WorkPoolUpdate(is_paused=False))


def shoot(prefect: str, mlflow: str, deployment_id, artifact_id, out: Path) -> dict:
    """Take the four screenshots; returns what was checked on the way."""
    from playwright.sync_api import expect, sync_playwright

    report: dict = {}
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.set_default_timeout(60_000)

            # 1. deployment page -> Run -> Custom run, as a person clicks it
            page.goto(f"{prefect}/deployments/deployment/{deployment_id}")
            page.get_by_role("button", name=re.compile(r"^\s*Run\s*$")).first.click()
            page.get_by_text("Custom run", exact=True).click()
            page.wait_for_url(re.compile(r"/run\b"))
            page.get_by_text("Empty = the task's own value").first.wait_for()
            report["form_url"] = page.url
            report["form_fields"] = page.evaluate("""() => [...document.querySelectorAll('input, textarea')]
                .filter(e => e.offsetParent !== null && e.type !== 'hidden')
                .map(e => e.type + '=' + JSON.stringify(e.type === 'checkbox' ? e.checked : e.value))""")
            report["form_empty_notes"] = page.get_by_text("Empty = the task's own value").count()
            tall_shot(page, out / "prefect_form_empty_fields.png")
            report["form_submits"] = submitted_form(f"{prefect}/api", page, report["form_url"])

            # 2. the train-toy artifact
            page.goto(f"{prefect}/artifacts/artifact/{artifact_id}")
            page.get_by_role("heading", name=re.compile("Test results")).first.wait_for()
            wide = page.evaluate(WIDE)  # the results table scrolls sideways at 1280: widen until it fits
            if wide > 0:
                page.set_viewport_size({"width": min(WIDTH + wide + 40, MAX_WIDTH), "height": 900})
            links = page.eval_on_selector_all("a[href]", "as => as.map(a => [a.innerText, a.href])")
            report["artifact_mlflow_links"] = [[text, href] for text, href in links
                                               if "/#/" in href or "get-artifact" in href]
            images = page.locator("img")
            for i in range(images.count()):
                images.nth(i).scroll_into_view_if_needed()
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            report["artifact_images"] = page.eval_on_selector_all(
                "img", "is => is.map(i => [i.src, i.naturalWidth > 0])")
            tall_shot(page, out / "prefect_train_summary.png")
            report["link_checks"] = [{"link": text, "href": href, "on_running_ui": href.startswith(mlflow + "/"),
                                      "status": page.request.get(href).status}
                                     for text, href in report["artifact_mlflow_links"]]

            # the run link opens the run's page in the browser (an HTTP 200 alone says little for a #/ route)
            run_link = next(href for text, href in report["artifact_mlflow_links"] if text.startswith("run "))
            mlpage = browser.new_page(viewport={"width": WIDTH, "height": 900})
            mlpage.set_default_timeout(60_000)
            mlpage.goto(run_link)
            expect(mlpage.get_by_role("heading", name="train-toy").first).to_be_visible()
            report["run_link_opens"] = mlpage.url
            # the sidebar's GenAI / Model training switch (kept in localStorage): Model training, as a person
            # who trains models would set it; the pages below keep it
            mlpage.get_by_text("Model training", exact=True).first.click()

            # 3. the experiment: where its bare address lands, then its runs table
            experiment_id = re.search(r"#/experiments/(\d+)", run_link).group(1)
            fresh = browser.new_page(viewport={"width": WIDTH, "height": 900})  # never switched the workflow
            fresh.goto(f"{mlflow}/#/experiments/{experiment_id}")
            fresh.wait_for_url(re.compile(rf"#/experiments/{experiment_id}/."))
            report["experiment_bare_url_lands_on"] = fresh.url
            fresh.close()
            mlpage.goto(f"{mlflow}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
            mlpage.get_by_role("link", name="train-toy").first.wait_for()
            close_assistant(mlpage)
            report["experiment_url"] = mlpage.url
            mlpage.screenshot(path=str(out / "mlflow_experiment_runs.png"))

            # 4. the model version page, from the artifact's link
            version_link = next(href for text, href in report["artifact_mlflow_links"] if text.startswith("model "))
            mlpage.goto(version_link)
            mlpage.get_by_text("prompt_sha256").first.wait_for(state="attached")
            close_assistant(mlpage)
            mlpage.locator("[aria-expanded=true]", has_text="Description").first.click()  # the model card: folded
            mlpage.get_by_role("heading", name="What it does").wait_for(state="hidden")
            mlpage.evaluate(UNFOLD, "prompt_sha256")  # every tag, not the table's first rows
            tall_shot(mlpage, out / "mlflow_model_version.png")
        finally:
            browser.close()
    return report


FORM_DEFAULTS = {"task", "params_file", "promote", "refresh_data", "keep_unchanged_champion"}


def findings(report: dict) -> list[str]:
    """What contradicts the pictures' captions (a pre-filled override, a link off the running UI or not 200), and
    NOTEs on what MLflow itself does."""
    found = [f"form field pre-filled: {f}" for f in report["form_fields"] if f.startswith("number=") and f != 'number=""']
    sent = report["form_submits"].get("params", {})
    found += [f"the form submits {k}={v!r} that nobody filled in" for k, v in sent.items()
              if k not in FORM_DEFAULTS and v not in (None, {}, "")]
    found += [f"artifact link {c['link']!r} -> {c['href']}: on the running UI {c['on_running_ui']}, HTTP {c['status']}"
              for c in report["link_checks"] if not c["on_running_ui"] or c["status"] != 200]
    found += [f"artifact image did not load: {src}" for src, ok in report["artifact_images"] if not ok]
    if "/runs" not in report["experiment_bare_url_lands_on"]:
        found.append(f"NOTE: the experiment's bare address opens {report['experiment_bare_url_lands_on']}, not its runs "
                     "(MLflow's GenAI / Model training switch, not the experiment's mlflow.experimentKind tag, "
                     "decides in a browser that never switched it)")
    return found


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
        report = shoot(prefect, mlflow, deployment_id, artifact_id, args.out)
        print(json.dumps(report, indent=1, default=str))
        found = findings(report)
        print("\n".join(f if f.startswith("NOTE") else f"PROBLEM: {f}" for f in found) or "checks: all passed")
        if any(not f.startswith("NOTE") for f in found):
            raise SystemExit(1)
    finally:
        if not args.keep:
            print(stack(env, "down").stdout.strip())
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"stack left up: {prefect} {mlflow}; python -m flows.stack down --project {project}")


if __name__ == "__main__":
    main()
