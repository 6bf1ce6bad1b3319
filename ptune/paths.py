"""Every path ptune reads or writes is defined here, once."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def ptune_home() -> Path:
    """Cache root for downloaded packages and converted models (`$PTUNE_HOME`, default ~/.cache/ptune)."""
    return Path(os.environ.get("PTUNE_HOME", Path.home() / ".cache" / "ptune")).expanduser()


def packages_dir() -> Path:
    return ptune_home() / "packages"


def models_dir() -> Path:
    return ptune_home() / "models"


def project_dir() -> Path:
    """Project root holding data/, metrics/, params.yaml (`$PTUNE_PROJECT_DIR`, default the working directory)."""
    return Path(os.environ.get("PTUNE_PROJECT_DIR", Path.cwd())).resolve()


def data_dir() -> Path:
    return project_dir() / "data"


def raw_path(task: str) -> Path:
    return data_dir() / "raw" / f"{task}.jsonl"


def prepared_dir(task: str) -> Path:
    return data_dir() / "prepared" / task


def validation_dir(task: str) -> Path:
    return data_dir() / "validation" / task


def metrics_path(task: str) -> Path:
    return project_dir() / "metrics" / f"{task}.json"


def runs_dir() -> Path:
    """Training outputs: prompts, checkpoints, reports (outputs/<task>/...)."""
    return project_dir() / "outputs"


def reference_dir(task: str) -> Path:
    """Reference models' results (`ptune reference`): outputs/<task>/reference/<method>.json."""
    return runs_dir() / task / "reference"


def redacted(url: str) -> str:
    """A URL (tracking server, database, storage) as messages and logs show it: any password replaced by ***."""
    parts = urlsplit(url)
    try:
        password, port = parts.password, parts.port
    except ValueError:  # not a URL we can take apart: show nothing after the scheme that could hold a secret
        return url if "@" not in url else url.split("://", 1)[0] + "://***"
    if password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc))
