"""`make run`: the nightly flow on the offline default tasks of params.yaml, with embedded defaults.

- Prefect: the server at $PREFECT_API_URL if set, else Prefect's local ephemeral API (runs are kept in
  $PREFECT_HOME, default ~/.prefect, so a later `make server` shows them in the UI).
- MLflow: $MLFLOW_TRACKING_URI, else SQLite `mlruns.db` in the project (artifacts in mlartifacts/).
- Hub access off, telemetry off. Exit status 1 when any task failed.
"""

from __future__ import annotations

import os
import sys

DEFAULT_ENV = {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
    "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1", "TOKENIZERS_PARALLELISM": "false", "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "ptune", "PREFECT_RESULTS_DEFAULT_SERIALIZER": "json",
}


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def _round(value: object) -> object:
    return round(value) if isinstance(value, float) else value


def _interval(found: object) -> str:
    """[diff, low, high] -> "+0.0450 [+0.0125, +0.0775]" (flows.common.fmt_interval; prefect-free here)."""
    return "-" if not isinstance(found, list | tuple) else f"{found[0]:+.4f} [{found[1]:+.4f}, {found[2]:+.4f}]"


def summary_table(rows: list[dict]) -> str:
    """Plain-text table: one line per task."""
    head = ("task", "state", "metric", "best baseline", "soft prompt", "gain [95% CI]", "steps", "train s", "task s",
            "trainable params", "decision", "version")
    lines = [[r["task"], r["state"], r.get("metric", "-"), _fmt(r.get("best_baseline")), _fmt(r.get("tuned")),
              _interval(r.get("gain_ci")),
              _fmt(r.get("steps")), _fmt(_round(r.get("train_seconds"))), _fmt(_round(r.get("seconds"))),
              _fmt(r.get("trainable")), r.get("decision", "-"), _fmt(r.get("version"))] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*ln) for ln in lines])


def main() -> int:
    for key, value in DEFAULT_ENV.items():
        os.environ.setdefault(key, value)
    from flows.nightly import nightly_flow
    from flows.params import NightlyParams
    from ptune.registry.tracking import tracking_uri

    state = nightly_flow(NightlyParams(), return_state=True)
    rows = state.result(raise_on_failure=False)  # per-task rows, also when the run ended Failed
    rows = rows if isinstance(rows, list) else []
    print("\n" + summary_table(rows))
    for row in rows:
        if row["state"] != "Completed":
            print(f"\n{row['task']} failed: {row.get('message', '')}")
    uri = tracking_uri()
    print(f"\nnightly flow: {state.name}" + (f" ({state.message})" if state.message else ""))
    print(f"MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000   (or `make mlflow-ui`)")
    print("Prefect UI:  make up   then open http://127.0.0.1:4200/runs  (artifacts: tables, validation reports)")
    print("Per task:    outputs/<task>/prefect/<flow run>/report/report.md")
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
