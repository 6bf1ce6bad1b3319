"""The playground page at / in a real headless Chromium (Debian's `chromium`, installed by `make setup`),
driven by Playwright: it lists the served tasks, submits an input and shows the label, the per-label
scores, the prompt version and the latency; a two-field task gets one labelled box per field, and the page
says which alias and version it serves, that version's test score vs the best baseline, and warns when the
alias is @challenger. PTUNE_SCREENSHOTS=<dir> keeps the two-field page as <dir>/playground_two_fields.png
(docs/img)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ptune.data.catalog import get_task
from ptune.serving.multi_prompt import Row

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="Debian package `chromium` missing: `make setup` installs it (apt-get)")


def test_playground_submits_and_shows_a_label(served):
    from playwright.sync_api import sync_playwright

    service, url, _, _ = served
    want = service.model.predict([Row("rotten_tomatoes", "a witty film")])[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#task option[value=intent]", state="attached")
            page.select_option("#task", "rotten_tomatoes")
            page.fill("#field-text", "a witty film")
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])")
            label = page.text_content("#label")
            rows = page.locator("#scores tr").all_text_contents()
            version, latency = page.text_content("#version"), page.text_content("#latency")
            error = page.text_content("#error")
        finally:
            browser.close()
    assert error == ""
    assert label == want.label and label in get_task("rotten_tomatoes").label_words
    assert len(rows) == 2 and all(any(w in r for w in want.scores) for r in rows)
    assert version == want.version and float(latency) > 0


def test_playground_gives_a_box_per_field_the_score_and_a_challenger_warning(served_fields, tmp_path):
    from playwright.sync_api import sync_playwright

    service, url = served_fields
    fields = {"question": "is the sky green", "passage": "The sky is blue on a clear day, and grey when it rains."}
    source = get_task("boolq_offline").formatter({**fields, "answer": "true"})[0]
    want = service.model.predict([Row("boolq_offline", source, raw=True)])[0]
    shot = Path(os.environ.get("PTUNE_SCREENSHOTS") or tmp_path) / "playground_two_fields.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 760})
            page.goto(url)
            page.wait_for_selector("#task option[value=boolq_offline]", state="attached")
            page.select_option("#task", "boolq_offline")
            labels = page.locator("#fields label span").all_text_contents()
            for name, text in fields.items():
                page.fill(f"#field-{name}", text)
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])")
            serving, warning = page.text_content("#serving"), page.locator("#warning")
            warned, warning_text = warning.is_visible(), warning.text_content()
            label, error = page.text_content("#label"), page.text_content("#error")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert labels == ["question", "passage"] and error == ""
    assert serving == "serving ptune-boolq_offline@challenger version 1: test accuracy 0.82 vs best hand-written 0.77"
    assert warned and "@challenger" in warning_text and "not been promoted" in warning_text
    assert label == want.label and shot.stat().st_size > 0
