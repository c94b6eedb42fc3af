"""The dashboard in a real browser during a real run: Debian's chromium, headless, driven by
Playwright (which never downloads a browser here: it is given /usr/bin/chromium).

Each test runs ``privgrid run configs/paper.toml --privacy plain --dashboard 127.0.0.1:PORT``
(real processes, real Mosquitto), opens the page as soon as the dashboard listens, and waits
on what the page shows (Playwright re-checks a condition on every change of the page, with
a deadline): never a fixed sleep. Screenshots go to the run folder (``dashboard.png``);
``PRIVGRID_WRITE_FIGURES=1`` also copies the converged run's to docs/figures/dashboard.png
for the README.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from privgrid.broker.local import free_port
from privgrid.dashboard.state import CONGESTION_TOL
from tests.test_run_failures import PAPER, Run, no_process_left_behind  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "docs" / "figures" / "dashboard.png"
#: Chromium's switches: headless as root in a container, nothing fetched from anywhere.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 240_000  # a deadline for each condition, not a pause: loaded machines are slow

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.browser,
    pytest.mark.grid,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium (scripts/setup.sh --system-packages installs it)",
    ),
]


@pytest.fixture
def page(tmp_path):
    """A page of a fresh headless chromium (its own user-data-dir)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
            # The page's Content-Security-Policy forbids eval(), which Playwright's
            # wait_for_function needs; the policy itself is tested in test_dashboard_server.
            bypass_csp=True,
        )
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors  # type: ignore[attr-defined]
        yield page
        context.close()


def start_with_dashboard(tmp_path: Path) -> tuple[Run, str]:
    """A run with its dashboard; returns once the dashboard says where it listens."""
    port = free_port()
    run = Run.start(tmp_path, PAPER, "--dashboard", f"127.0.0.1:{port}")
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        for line in run.stderr().splitlines():
            if line.startswith("dashboard: http://"):
                url = line.removeprefix("dashboard: ")
                assert url == f"http://127.0.0.1:{port}/"
                return run, url
        assert run.process.poll() is None, run.stderr()[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"the dashboard did not start: {run.stderr()[-3000:]}")


def shown_round(page) -> int:
    return int(page.get_attribute("#round", "data-round") or 0)


@pytest.mark.usefixtures("no_process_left_behind")
def test_a_live_run_shows_rounds_advancing_and_the_congested_lines_once_cleared(tmp_path, page):
    run, url = start_with_dashboard(tmp_path)
    page.goto(url)
    page.wait_for_function("Number(document.getElementById('round').dataset.round) >= 1")
    first = shown_round(page)
    # While it negotiates, a limited line is "sealed until cleared", never a made-up price.
    assert page.get_attribute('#network line[data-line="2-3"]', "data-state") in (
        "unknown",
        "congested",  # only if the run cleared already (a loaded machine, a slow page)
    )
    page.wait_for_function(f"Number(document.getElementById('round').dataset.round) > {first}")
    assert shown_round(page) > first
    assert page.locator('#participants tr[data-state="connected"]').count() >= 1
    # Once cleared, the lines results.json prices are congested on the page: 2-3 and 4-5.
    for line in ("2-3", "4-5"):
        page.wait_for_selector(f'#network line[data-line="{line}"][data-congested="true"]')
        page.wait_for_selector(f'#lines tr[data-line="{line}"][data-congested="true"]')
    assert run.finish() == 0, run.stderr()[-3000:]
    results = run.results()
    priced = {ln["id"] for ln in results["lines"] if max(ln["price_up"], ln["price_down"]) > 0}
    assert priced == {"2-3", "4-5"}
    congested_on_page = page.eval_on_selector_all(
        '#network line[data-congested="true"]', "nodes => nodes.map(n => n.dataset.line)"
    )
    assert sorted(congested_on_page) == ["2-3", "4-5"]
    assert CONGESTION_TOL < min(
        max(ln["price_up"], ln["price_down"]) for ln in results["lines"] if ln["id"] in priced
    )
    page.wait_for_selector('#phase[data-phase="converged"]')
    assert shown_round(page) == results["rounds"]
    assert page.errors == []  # type: ignore[attr-defined]
    shot = run.folder / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("PRIVGRID_WRITE_FIGURES") == "1":
        shutil.copyfile(shot, FIGURE)


@pytest.mark.usefixtures("no_process_left_behind")
def test_a_killed_agent_shows_as_missing(tmp_path, page):
    """kill -9 of S3 mid-run (default on_missing = "abort"): its last will reaches the
    dashboard, which shows it missing, and then the run's failure naming it."""
    run, url = start_with_dashboard(tmp_path)
    page.goto(url)
    page.wait_for_function("Number(document.getElementById('round').dataset.round) >= 3")
    assert page.locator('#participants tr[data-participant="S3"][data-state="connected"]').count()
    run.kill("S3")
    page.wait_for_selector('#participants tr[data-participant="S3"][data-state="missing"]')
    assert page.locator('#participants tr[data-state="missing"]').count() == 1  # S3 alone
    assert "left in round" in page.inner_text('#participants tr[data-participant="S3"]')
    page.wait_for_selector('#network text.agent-label.missing[data-agent="S3"]')
    assert run.finish() == 3, run.stderr()[-3000:]
    page.wait_for_selector('#phase[data-phase="failed"]')
    assert "S3" in page.inner_text("#phase")
    assert page.errors == []  # type: ignore[attr-defined]
    page.screenshot(path=str(run.folder / "dashboard.png"), full_page=True)
