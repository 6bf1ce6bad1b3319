"""The playground page at / in a real headless Chromium (Debian's `chromium`, installed by `make setup`),
driven by Playwright: it lists the served tasks, submits an input and shows the label, the per-label
scores, the prompt version and the latency."""

from __future__ import annotations

import shutil

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
            page.fill("#text", "a witty film")
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
