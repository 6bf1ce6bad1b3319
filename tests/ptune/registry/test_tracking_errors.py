"""A tracking failure is one line naming the URI without its password, and a 503 (the tracking server is up,
its database is not) says where to look."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from ptune.errors import RegistryError
from ptune.paths import redacted
from ptune.registry.tracking import guard


def test_the_password_of_a_tracking_uri_is_never_shown(monkeypatch):
    uri = "http://alice:s3cret@mlflow.example.org:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert redacted(uri) == "http://alice:***@mlflow.example.org:5000"
    assert redacted("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    with pytest.raises(RegistryError) as raised, guard("model lookup"):
        raise MlflowException(f"API request to {uri}/api/2.0/mlflow/registered-models/get failed with error code "
                              "503 != 200. Response body: ''")
    message = str(raised.value)
    assert "s3cret" not in message and "alice:***@mlflow.example.org" in message
    assert "database" in message and len(message.splitlines()) == 1


def test_other_failures_keep_their_own_words(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(RegistryError, match=r"MLflow version read failed \(tracking URI http://127.0.0.1:9\): "
                                            r"Connection refused$"), guard("version read"):
        raise OSError("Connection refused")
