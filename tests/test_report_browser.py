"""report.html in a real browser: Debian's headless Chromium, driven by Playwright's Python
package (``executable_path``: no browser download). It clicks: a class tab, two photos' boxes,
the copy button. The screenshot goes to ``test-artifacts/`` (or ``$ASYNCDS_TEST_ARTIFACTS``).

Skipped, with the reason, only where no Chromium binary or no Playwright is installed; under CI
(``CI=true``, where ``.ci/run`` installs both) a missing one fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncds.assembly.writers.report import AUTHOR_BYTES
from asyncds.cli import EXIT_OK
from asyncds.config import ClassSpec, Config, SplitSpec
from asyncds.files import image_relpath
from asyncds.state import CandidateRow, Status
from tests.e2e import REPO, cli_env, write_config
from tests.test_report import HOSTILE, expected_counts, write_hostile

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser")
ARTIFACTS = Path(os.environ.get("ASYNCDS_TEST_ARTIFACTS", REPO / "test-artifacts"))


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/run installs it, so CI must have it")
    pytest.skip(reason)


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return next((p for p in CHROMIUM_PATHS if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary = chromium_binary()
    if binary is None:
        _missing("no chromium binary (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright's Python package is not installed (pip install playwright)")
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A page with everything it did recorded: requests, script errors, dialogs."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.grant_permissions(["clipboard-read", "clipboard-write"])
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.as_uri())

    def close(self) -> None:
        self.context.close()

    def assert_no_network(self) -> None:
        assert all(url.startswith("file://") for url in self.requests), self.requests
        assert not self.errors and not self.dialogs, (self.errors, self.dialogs)

    def rendered_images(self) -> list[dict[str, Any]]:
        self.page.wait_for_function(
            "() => { const imgs = [...document.querySelectorAll('#grid img')];"
            " return imgs.length > 0 && imgs.every(i => i.complete); }"
        )
        return self.page.eval_on_selector_all(
            "#grid img", "imgs => imgs.map(i => ({src: i.src, width: i.naturalWidth}))"
        )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run on the emulator: real photos, dedup drops, previews from the pool."""
    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "out"
    config = write_config(
        tmp / "c.yaml", {"cat": 40, "dog": 30, "bird": 30}, dedup={"phash_distance": 6}
    )
    faults = tmp / "faults.yaml"  # copies, for the dropped section
    faults.write_text("near_duplicate: 0.9\n")  # the seeded catalog: 2 in the first 100
    args = [str(config), "--emulator", "--emulator-faults", str(faults), "--output-dir", str(out)]
    # A process of its own: the browser's Playwright runs an event loop in this thread.
    run = subprocess.run(
        [sys.executable, "-m", "asyncds", *args, "-q"],
        env=cli_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == EXIT_OK, run.stderr
    return out


def test_the_report_in_chromium_counts_loads_ticks_and_copies(built: Path, browser: Any):
    summary = json.loads((built / "summary.json").read_text())
    view = Page(browser, built / "report.html")
    page = view.page
    try:
        # The counts shown are summary.json's.
        cells = page.eval_on_selector_all(
            "td[data-key]",
            "tds => tds.map(td => [td.hasAttribute('data-total') ? '' : td.dataset.class,"
            " td.dataset.key, td.textContent])",
        )
        assert {(label, key): int(text) for label, key, text in cells} == expected_counts(summary)
        # A class's thumbnails all load.
        page.click("button.tab[data-tab='1']")
        assert page.text_content("#view h2") == "dog"
        images = view.rendered_images()
        assert 0 < len(images) <= summary["classes"]["dog"]["good"]
        assert [i["src"] for i in images if i["width"] == 0] == []
        # Ticking two photos yields their ids, in the box and on the clipboard.
        boxes = page.locator("#grid .cell input[type=checkbox]")
        ids = [boxes.nth(i).get_attribute("data-id") for i in (0, 4)]
        boxes.nth(0).click()
        boxes.nth(4).click()
        assert page.input_value("#ids").splitlines() == ids
        assert page.text_content("#picked-n") == "2 photos ticked"
        page.click("#copy")
        page.wait_for_function("() => document.getElementById('copied').textContent !== ''")
        assert page.text_content("#copied") == "copied"
        assert page.evaluate("navigator.clipboard.readText()").splitlines() == ids
        # Ticks survive a change of tab (the grid is redrawn from the data).
        page.click("button.tab[data-tab='0']")
        page.click("button.tab[data-tab='1']")
        assert page.locator("#grid .cell input:checked").count() == 2
        # The screenshot (docs/report.png is one): the summary and the ticked photos.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1280, "height": 1300})
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_function("() => [...document.images].every(i => i.complete)")
        page.screenshot(path=str(ARTIFACTS / "report.png"))
        # The dropped images worth a look, beside the image they collided with.
        dropped = page.evaluate(
            "JSON.parse(document.getElementById('asyncds-data').textContent).dropped"
        )
        assert dropped and all(d[2] in ("near_duplicate", "cross_class") for d in dropped)
        page.click("button.tab[data-tab='dropped']")
        assert page.locator("#grid .cell.pair").count() >= 1
        if any(d[6] for d in dropped):  # the image it collided with is in the dataset
            assert [i for i in view.rendered_images() if i["width"] == 0] == []
        page.screenshot(path=str(ARTIFACTS / "report-dropped.png"))
        view.assert_no_network()
    finally:
        view.close()


def test_a_class_of_20000_draws_only_what_is_in_view(browser: Any, tmp_path: Path):
    out = tmp_path / "out"
    (out / "cat").mkdir(parents=True)
    rows = []
    for i in range(20_000):
        pid = str(10_000 + i)
        (out / "cat" / f"{pid}.jpg").write_bytes(b"")  # never drawn but in view
        rows.append(
            CandidateRow(
                label="cat",
                photo_id=pid,
                seq=i,
                url="u",
                width=1,
                height=1,
                owner="o@N01",
                ownername="A",
                title="t",
                license=4,
                date_upload=0,
                status=Status.OK,
                path=image_relpath("cat", pid),
            )
        )
    config = Config(
        classes=(ClassSpec("cat", 20_000, ("cat",)),),
        split=SplitSpec(seed=1, type="proportional", test_size=0.1),
        output_dir=out,
    )
    from asyncds.assembly import RunStats, write_outputs

    write_outputs(rows, config, out, RunStats(1.0, 1, 1))
    view = Page(browser, out / "report.html")
    page = view.page
    try:
        page.wait_for_selector("#grid .cell")
        drawn = page.locator("#grid .cell").count()
        assert 0 < drawn < 300, drawn
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_selector("#grid .cell[data-id='29999']")
        assert page.locator("#grid .cell").count() < 300
        assert page.locator("#grid .cell[data-id='10000']").count() == 0
    finally:
        view.close()


def test_hostile_text_stays_text_in_the_browser(browser: Any, tmp_path: Path):
    view = Page(browser, write_hostile(tmp_path))
    page = view.page
    try:
        page.wait_for_selector("#grid .cell .author")
        assert page.text_content("#grid .cell .author") == HOSTILE[:AUTHOR_BYTES]
        assert page.get_attribute("#grid .cell img", "title").startswith(HOSTILE)
        page.click("button.tab[data-tab='1']")
        assert page.text_content("#view h2") == "a&b 'c'"
        assert page.locator("img[src='x']").count() == 0
        view.assert_no_network()
    finally:
        view.close()
