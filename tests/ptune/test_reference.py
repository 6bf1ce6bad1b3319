"""Reference models (`ptune reference`): each method trains on the tiny model, writes its JSON and a reference
MLflow run, never touches the registry or the base model's files; the report shows them with the gap closed."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ptune.cli import app
from ptune.config import load_params
from ptune.errors import DataError, ModelError
from ptune.evaluation.references import NOT_ABOVE, ReferenceRow, gap_closed, gap_text
from ptune.evaluation.report import flat_metrics, gate_metrics, write_report
from ptune.evaluation.scoring import EvalResult
from ptune.fileio import sha256_of
from ptune.model.batching import collate, encode_pair
from ptune.model.soft_prompt import prompt_inputs, target_loss
from ptune.paths import reference_dir
from ptune.pipeline import stages
from ptune.studies import reference
from tests.support import build_project, project_env


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_causal_dir):
    """The toy project with a second clean task (toy2, the same rows under another template) for the mixture;
    toy and toy2 fetched and prepared, toy_bad left unprepared."""
    root = build_project(tmp_path_factory.mktemp("reference-project"), tiny_causal_dir)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tasks"]["toy2"] = {**params["tasks"]["toy"], "template": "Text: {text}\nLabel:"}
    params["run_tasks"] = ["toy", "toy2"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with project_env(root):
        for task in ("toy", "toy2"):
            run = stages.TaskRun.build(task, load_params(root / "params.yaml"))
            stages.fetch(run)
            stages.prepare(run)
        yield root


def _weights_digest(model_dir):
    return {p.name: sha256_of(p) for p in sorted(model_dir.glob("*.safetensors"))}


@pytest.mark.parametrize("method", reference.METHODS)
def test_each_method_writes_its_json_and_a_reference_run_and_registers_nothing(method, project, tiny_causal_dir,
                                                                              monkeypatch):
    monkeypatch.chdir(project)
    before = _weights_digest(tiny_causal_dir)
    out = CliRunner().invoke(app, ["reference", "toy", "--method", method, "--steps", "4", "--batch-size", "4"])
    assert out.exit_code == 0, out.output
    record = json.loads((reference_dir("toy") / f"{method}.json").read_text())
    assert record["method"] == method and record["steps"] <= 4 and record["max_steps"] == 4
    assert set(record["metrics"]) == {"test/accuracy"} and record["n"] > 0 and 1 <= record["best_step"] <= 4
    assert record["lr"] == reference.DEFAULT_LR[method] and record["seed"] == 0 and record["seconds"] > 0
    run = stages.TaskRun.build("toy", load_params(project / "params.yaml"))
    rows = len(run.examples("train"))
    assert record["mixture"] == ({"toy": rows, "toy2": rows} if method == "multitask" else {"toy": rows})
    assert record["data_version"] == run.data_version and record["command"].startswith("ptune")
    mlc = MlflowClient()
    run = mlc.get_run(record["mlflow_run"])
    assert run.info.status == "FINISHED" and run.data.tags["ptune.kind"] == "reference"
    assert run.data.tags["ptune.reference_method"] == method and run.data.params["lr"] == str(record["lr"])
    assert run.data.metrics["test/accuracy"] == pytest.approx(record["metrics"]["test/accuracy"])
    assert [m.step for m in mlc.get_metric_history(run.info.run_id, "validation/accuracy")][-1] == record["steps"]
    assert {a.path for a in mlc.list_artifacts(run.info.run_id, "report")} >= {f"report/{method}.json"}
    assert mlc.search_model_versions("name='ptune-toy'") == [] and mlc.search_registered_models() == []
    assert _weights_digest(tiny_causal_dir) == before


def test_lora_changes_the_model_and_leaves_the_base_alone(project, tiny_causal):
    """LoRA B starts at zero (same loss as the frozen base); a few steps at a high lr must lower the loss on
    the rows it trained on, while the frozen base's loss stays what it was."""
    run = stages.TaskRun.build("toy", load_params(project / "params.yaml"))
    rows = run.examples("train")[:8]
    batch = collate([encode_pair(tiny_causal.tokenizer, ex.source, ex.target, encoder_decoder=False, add_eos=False,
                                 max_source_tokens=64) for ex in rows], tiny_causal.tokenizer.pad_token_id, False)

    def loss(base):
        with torch.no_grad():
            return float(target_loss(base, prompt_inputs(base, None, **batch)))

    frozen = loss(tiny_causal)
    ref = reference.trainable_copy(tiny_causal, "lora")
    assert loss(ref) == pytest.approx(frozen, abs=1e-6)
    trainable = {n for n, p in ref.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    cfg = reference.ReferenceConfig("lora", steps=20, batch_size=8, lr=1e-2, eval_every=0, patience=0, seed=0)
    reference.train_reference(run, ref, cfg, [(run, rows)])
    assert loss(ref) < frozen - 0.05
    assert loss(tiny_causal) == frozen and not any(p.requires_grad for p in tiny_causal.model.parameters())



@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_reference_starts_from_the_fp32_checkpoint_when_the_base_is_held_in_bf16(tiny_causal_dir, method):
    """model_dtype auto/bf16 hold the frozen base (partly) in bf16; a reference trains from the checkpoint's
    fp32 weights all the same (loaded again), and the frozen base is left as it was held."""
    from ptune.model.base import load_base_model
    from ptune.model.precision import hold_matmul_weights

    fp32, held = load_base_model(tiny_causal_dir), load_base_model(tiny_causal_dir)
    hold_matmul_weights(held.model, torch.bfloat16)
    ref = reference.trainable_copy(held, method)
    weights = dict(fp32.model.named_parameters())
    for name, param in ref.model.named_parameters():
        if "lora_" not in name:
            assert param.dtype == torch.float32 and torch.equal(param, weights[name.replace(".base_layer", "")]), name
    assert ref.fingerprint == held.fingerprint
    assert {p.dtype for p in held.model.parameters()} == {torch.bfloat16, torch.float32}


def test_lora_finds_t5_names_and_refuses_a_model_without_them(tiny_t5):
    ref = reference.trainable_copy(tiny_t5, "lora")
    adapted = [n for n, p in ref.model.named_parameters() if p.requires_grad]
    assert adapted and all(".q.lora_" in n or ".v.lora_" in n for n in adapted)
    assert any(".q.lora_A" in n for n in adapted) and any(".v.lora_B" in n for n in adapted)
    with pytest.raises(ModelError, match="q_proj/v_proj or q/v.*--method full"):
        reference._with_lora(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_bad_input_says_what_to_do(project, monkeypatch):
    monkeypatch.chdir(project)
    runner = CliRunner()
    out = runner.invoke(app, ["reference", "toy", "--method", "prefix"])
    assert "unknown (allowed: lora, full, multitask)" in str(out.exception)
    out = runner.invoke(app, ["reference", "toy_bad", "--method", "lora"])
    assert isinstance(out.exception, DataError) and "ptune prepare toy_bad" in str(out.exception)
    out = runner.invoke(app, ["reference", "toy", "--method", "multitask", "--mix", "toy,toy_bad"])
    assert isinstance(out.exception, DataError) and "ptune prepare toy_bad" in str(out.exception)
    out = runner.invoke(app, ["reference", "toy", "--method", "full", "--mix", "toy2"])
    assert "mix is for method multitask, not full" in str(out.exception)


def test_gap_closed_known_answer_and_undefined():
    assert gap_closed(0.8, 0.7, 0.9) == pytest.approx(0.5)
    assert gap_closed(0.9, 0.7, 0.9) == pytest.approx(1.0)
    assert gap_closed(0.8, 0.7, 0.7) is None and gap_closed(0.8, 0.7, 0.6) is None
    assert gap_text(None) == NOT_ABOVE == "n/a (reference does not beat the baseline)" and gap_text(0.5) == "0.500"


def _result(accuracy, n=10):
    right = round(accuracy * n)
    return EvalResult({"test/accuracy": accuracy}, ["good"] * right + ["bad"] * (n - right), 0.0, n, 1.0)


def test_report_has_reference_rows_with_gap_closed_and_keeps_them_out_of_the_gate(tmp_path):
    results = {"zero_shot": _result(0.7), "tuned": _result(0.8)}
    rows = {"lora": ReferenceRow("lora", {"test/accuracy": 0.9}, 10, 1234, 6, 3),
            "full": ReferenceRow("full", {"test/accuracy": 0.6}, 10, 99999, 6, 6)}
    paths = write_report("toy", results, tmp_path, {"zero_shot": 0, "tuned": 8}, references=rows)
    md = paths.markdown.read_text()
    assert "| reference: LoRA r8 (q, v) | 0.9000 | 1234 | 10 | 3 / 6 | 0.500 |" in md
    assert f"| reference: full fine-tuning | 0.6000 | 99999 | 10 | 6 / 6 | {NOT_ABOVE} |" in md
    data = json.loads(paths.metrics.read_text())
    assert data["reference/lora/gap_closed"] == 0.5 and data["reference/lora/test/accuracy"] == 0.9
    assert "reference/full/gap_closed" not in data and data["reference/full/test/accuracy"] == 0.6
    assert not any(k.startswith("reference/") for k in gate_metrics(data))
    assert not any(k.startswith("reference/") for k in flat_metrics(results, {"tuned": 8}))
    assert "lora" not in paths.predictions.read_text()
    assert paths.chart.read_bytes()[:4] == b"\x89PNG"


def test_stage_report_reads_reference_files_of_the_current_data_only(project, tiny_causal):
    run = stages.TaskRun.build("toy", load_params(project / "params.yaml"), run_dir=project / "report-run")
    reference_dir("toy").mkdir(parents=True, exist_ok=True)
    (reference_dir("toy") / "stale.json").write_text(json.dumps(
        {"task": "toy", "method": "stale", "metrics": {"test/accuracy": 1.0}, "data_version": "0000"}))
    (reference_dir("toy") / "full.json").write_text(json.dumps(
        {"task": "toy", "method": "full", "metrics": {"test/accuracy": 1.0}, "n": 6, "steps": 4, "best_step": 2,
         "data_version": run.data_version}))
    tuned = stages.evaluate(run, tiny_causal, torch.zeros(2, tiny_causal.hidden_size), progress=False)
    written = stages.report(run, tuned, stages.baselines(run, tiny_causal, progress=False), 2).files
    md, data = written.markdown.read_text(), json.loads(written.metrics.read_text())
    assert "reference: full fine-tuning" in md and data["reference/full/test/accuracy"] == 1.0
    assert "reference stale left out: trained on data version 0000" in md and "reference/stale/test/accuracy" not in data
    (reference_dir("toy") / "stale.json").unlink()
