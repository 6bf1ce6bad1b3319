"""The task catalog: every entry formats a schema-faithful row; user tasks are validated in one error."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from ptune.cli import app
from ptune.config import Params, load_params, params_from_dict
from ptune.data.catalog import builtin_tasks, get_task, list_tasks
from ptune.data.spec import METRICS
from ptune.data.user_tasks import user_tasks
from ptune.errors import ConfigError

# One row per built-in task, with the exact column names and value types of its real source.
SAMPLE_ROWS = {
    "boolq_offline": {"question": "is the sky blue", "passage": "Sky -- The sky is blue by day.", "answer": "true"},
    "aclsum_title": {"abstract": "We study soft prompts. They work.", "title": "Soft Prompts Work"},
    "rotten_tomatoes": {"category": "rotten", "text": "A dull, plodding film.", "movie_name": "x",
                        "has_plot_and_reviews": "False"},
    "strategyqa": {"input": "Could a llama birth twice during the War in Vietnam?", "label": "No"},
    "vitaminc": {"input": "Westlife: sold 23 million.\nClaim: Westlife made under 23.5 million sales.",
                 "label": "Neither"},
    "presupposition_nli": {"input": "Sentence 1: He stopped.\nSentence 2: He ran.\n\nThe answer is: ",
                           "label": "entailment"},
    "intent": {"input": "Utterance: Add Sabrina Salerno to the grime playlist.", "label": "add_to_playlist"},
    "xsum": {"input": "Scotland's ski resorts had a record season.", "target": "Ski resorts had a record year."},
    "boolq": {"question": "is the sky blue", "passage": "The sky is blue.", "idx": 0, "label": 1},
    "cb": {"premise": "It rained.", "hypothesis": "It was wet.", "idx": 0, "label": 2},
    "rte": {"premise": "A cat sat.", "hypothesis": "An animal sat.", "idx": 0, "label": 0},
    "copa": {"premise": "The man broke his toe.", "choice1": "He dropped a hammer.", "choice2": "He sang.",
             "question": "cause", "idx": 0, "label": 0},
    "wic": {"word": "bank", "sentence1": "The river bank.", "sentence2": "The bank loan.", "start1": 10,
            "start2": 4, "end1": 14, "end2": 8, "idx": 0, "label": 0},
    "wsc": {"text": "Mark told Pete many lies about himself , which Pete included in his book .",
            "span1_index": 0, "span2_index": 13, "span1_text": "Mark", "span2_text": "his", "idx": 0, "label": 0},
    "multirc": {"paragraph": "Sam went home.", "question": "Where did Sam go?", "answer": "home",
                "idx": {"paragraph": 0, "question": 0, "answer": 0}, "label": 1},
    "record": {"passage": "Paris is in France.\n@highlight\nParis news", "query": "@placeholder is in France.",
               "entities": ["Paris", "France"], "entity_spans": {"text": ["Paris", "France"], "start": [0, 12],
                                                                  "end": [5, 18]},
               "answers": ["Paris"], "idx": {"passage": 0, "query": 0}},
    "sst2": {"sentence": "a gorgeous film ", "label": 1, "idx": 0},
    "dialogsum": {"id": "train_0", "dialogue": "#Person1#: Hi.\n#Person2#: Hello.", "summary": "They greet.",
                  "topic": "greeting"},
    "samsum": {"id": "1", "dialogue": "Amanda: cookies?\nJerry: sure!", "summary": "Amanda offers cookies."},
    "cnn_dailymail": {"article": "LONDON (CNN) -- News happened.", "highlights": "News happened.", "id": "a1"},
}


@pytest.mark.parametrize("name", sorted(builtin_tasks()))
def test_formatter_turns_schema_row_into_source_and_target(name: str) -> None:
    spec = builtin_tasks()[name]
    row = SAMPLE_ROWS[name]
    assert set(spec.columns) <= set(row), f"{name}: sample row lacks columns {set(spec.columns) - set(row)}"
    source, target = spec.formatter(row)
    assert source.strip() and target.strip()
    assert source == source.rstrip() and source[-1] in ":?", "source must end with its cue"
    assert not target.startswith(" ")
    assert all(m in METRICS[spec.kind] for m in spec.metrics)
    if spec.kind == "classification":
        assert target in spec.label_words
    else:
        assert spec.label_words == ()


def test_metrics_per_task() -> None:
    tasks = builtin_tasks()
    assert tasks["cb"].metrics == ("accuracy", "f1_macro")
    assert tasks["multirc"].metrics == ("f1a", "em")
    assert tasks["record"].metrics == ("em", "f1")
    for name in ("xsum", "aclsum_title", "dialogsum", "samsum", "cnn_dailymail"):
        assert tasks[name].metrics == ("rougeL", "rouge1", "rouge2", "rougeLsum")
    assert tasks["boolq"].metrics == ("accuracy",)
    assert {n for n, s in tasks.items() if s.source.offline} == {
        "rotten_tomatoes", "boolq_offline", "aclsum_title", "strategyqa", "vitaminc", "presupposition_nli", "intent",
        "xsum"}


def test_hub_labels_map_integers_and_refuse_hidden_test_labels() -> None:
    assert get_task("cb").formatter({**SAMPLE_ROWS["cb"], "label": 0})[1] == "entailment"
    with pytest.raises(ValueError):
        get_task("rte").formatter({**SAMPLE_ROWS["rte"], "label": -1})


def test_unknown_task_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match="did you mean rotten_tomatoes"):
        get_task("rotten_tomato")


GOOD = {"path": "reviews.csv", "template": "Review: {text}\nSentiment:", "target_field": "stars",
        "label_words": ["negative", "positive"], "label_map": {1: "negative", 5: "positive"}, "metric": "accuracy"}


def test_user_task_from_params_mapping_and_from_file(tmp_path) -> None:
    spec = user_tasks(params_from_dict({"tasks": {"reviews": GOOD}}))["reviews"]
    assert spec.kind == "classification" and spec.columns == ("text", "stars")
    assert spec.formatter({"text": "Great", "stars": 5}) == ("Review: Great\nSentiment:", "positive")
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"summ": {"path": "d.jsonl", "template": "{doc}\nTL;DR:",
                                                                 "target_field": "tldr", "metric": "rougeL",
                                                                 "stop_strings": ["\n"]}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tasks": {"file": "tasks.yaml"}}))
    spec = get_task("summ", load_params(tmp_path / "params.yaml"))
    assert spec.kind == "generation" and spec.metrics == ("rougeL",) and spec.stop_strings == ("\n",)
    assert spec.max_target_tokens == 16 and get_task("xsum").stop_strings == ("\n",)
    assert spec.source.path == tmp_path / "d.jsonl"
    assert "summ" in [s.name for s in list_tasks(load_params(tmp_path / "params.yaml"))]


def test_invalid_user_tasks_are_listed_in_one_error() -> None:
    bad = {
        "a": {**GOOD, "path": "x.txt", "metric": "bleu"},
        "b": {"template": "no placeholders", "target_field": "y", "colour": "red"},
        "c": {**GOOD, "label_map": {1: "meh"}, "k_shot": -1, "stop_strings": "\n"},
        "rotten_tomatoes": GOOD,
    }
    with pytest.raises(ConfigError) as info:
        user_tasks(Params(tasks=bad), reserved=builtin_tasks())
    message = str(info.value)
    for expected in ("task 'a': path='x.txt' (allowed suffixes: .jsonl, .csv, .parquet)",
                     "task 'a': metric='bleu' (allowed for classification: accuracy",
                     "task 'b': missing required field 'path'", "task 'b': unknown field 'colour'",
                     "task 'b': template='no placeholders'", "task 'c': label_map[1]='meh' (allowed: negative, positive)",
                     "task 'c': k_shot=-1 (allowed: integer >= 0)",
                     "task 'c': stop_strings='\\n' (allowed: a list of non-empty strings", "'rotten_tomatoes': name clashes"):
        assert expected in message


def test_evaluate_instructions_replace_a_tasks_own_and_name_known_tasks(tmp_path) -> None:
    """The baselines' instruction is an evaluation setting (params.yaml evaluate.instructions), for built-in
    and user tasks alike; a typo in a task name is refused with close matches."""
    params = params_from_dict({"tasks": {"reviews": GOOD},
                               "evaluate": {"instructions": {"reviews": "Good or bad?", "rotten_tomatoes": "Fresh?"}}})
    assert get_task("reviews", params).instruction == "Good or bad?"
    assert get_task("rotten_tomatoes", params).instruction == "Fresh?"
    assert get_task("boolq_offline", params) == get_task("boolq_offline")  # a task not named keeps its own
    assert get_task("rotten_tomatoes", params.for_task("rotten_tomatoes")).instruction == "Fresh?"
    with pytest.raises(ConfigError, match="evaluate.instructions.roten_tomatoes: unknown task .did you mean rotten"):
        get_task("boolq_offline", params_from_dict({"evaluate": {"instructions": {"roten_tomatoes": "x"}}}))
    with pytest.raises(ConfigError, match=r"evaluate.instructions.reviews = 3: must be a string"):
        params_from_dict({"evaluate": {"instructions": {"reviews": 3}}})


def test_an_instruction_in_a_task_entry_is_refused_naming_its_new_home(tmp_path) -> None:
    """`tasks` (or the file it names) is a dependency of dvc.yaml's train stage: the instruction left it."""
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"reviews": {**GOOD, "instruction": "Good or bad?"}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tasks": {"file": "tasks.yaml"}}))
    with pytest.raises(ConfigError) as info:
        get_task("reviews", load_params(tmp_path / "params.yaml"))
    assert "task 'reviews': 'instruction' moved to params.yaml `evaluate: {instructions: {reviews: ...}}`" in str(info.value)
    assert "unknown field" not in str(info.value)


def test_cli_tasks_lists_catalog(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))  # no params.yaml: the built-ins only
    missing = CliRunner().invoke(app, ["tasks", "--params", "/nonexistent/params.yaml"])
    assert isinstance(missing.exception, ConfigError) and "params file not found" in str(missing.exception)
    result = CliRunner().invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert set(builtin_tasks()) <= set(lines)
    assert "offline" in lines["intent"] and "hub" in lines["boolq"] and "f1_macro" in lines["cb"]


def test_ptune_does_not_import_great_expectations() -> None:
    code = ("import sys, ptune.data.catalog, ptune.data.splits, ptune.data.validation, ptune.cli, ptune.data.hub_tasks; "
            "sys.exit(1 if 'great_expectations' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@pytest.mark.parametrize("name", sorted(SAMPLE_ROWS))
def test_the_last_column_is_the_target_and_no_input(name: str) -> None:
    """TaskSpec.input_columns (what the pyfunc's signature offers) drops the last column: it must be the target,
    so changing it never changes the source text."""
    spec = builtin_tasks()[name]
    row = SAMPLE_ROWS[name]
    target = spec.columns[-1]
    assert spec.input_columns == spec.columns[:-1] and target not in spec.input_columns
    source = spec.formatter(row)[0]
    try:
        changed = spec.formatter({**row, target: "zz marker zz"})[0]
    except (KeyError, ValueError, TypeError, IndexError):
        return  # the target column only feeds the label mapping
    assert changed == source


def test_a_user_tasks_target_is_its_last_column(tmp_path) -> None:
    entry = {**GOOD, "template": "Label {label} text: {text}\nLabel:", "target_field": "label"}
    spec = user_tasks(Params(tasks={"leaky": entry}), reserved=builtin_tasks())["leaky"]
    assert spec.columns[-1] == "label" and spec.input_columns == ("text",)


@pytest.mark.parametrize("name", sorted(SAMPLE_ROWS))
def test_formatters_take_content_free_inputs(name: str) -> None:
    """Calibration scores content-free inputs ("", "N/A", "[MASK]") in every input column; no formatter may fail
    on them (boolq_offline's capitalised question once did, after 20 minutes of baselines)."""
    from ptune.evaluation.calibration import CONTENT_FREE, input_columns

    spec = builtin_tasks()[name]
    columns = input_columns(spec, dict(SAMPLE_ROWS[name]))  # the columns calibration fills, as it chooses them
    for text in CONTENT_FREE:
        source, _ = spec.formatter({**SAMPLE_ROWS[name], **{col: text for col in columns}})
        assert source.strip()
