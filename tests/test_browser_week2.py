"""Issue 21 in a real browser: a user's second week, in one server and one browser.

1. The Runs page keeps the run the user picked while a sweep queues its next trial (the live table
   refreshes; the selection and the address do not move).
2. One validation accuracy: a sweep trial whose best epoch (0.500) is not its last (0.250) shows the
   last epoch's on the Runs page and on the Sweeps page, the figure the checkpoint gives.
3. Run names travel: Evaluate's holdout table and Compare's legends say "baseline", not an id.
4. The download panel stays open on its result, with its form as the user filled it.
5. One export expander: "Prepare ONNX export" runs as a job in the same expander, which then offers
   the download and no second "Prepare".
The AppTest versions of these checks are in tests/test_week2.py (make test); this file is make e2e.
"""
import os
import time

import pytest

from tests.test_browser import ARGS, CHROMIUM, _until_settled, app, chromium  # noqa: F401 - fixtures
from tests.test_week2 import done_run

GRID = '[data-testid="stDataFrame"]'


@pytest.fixture
def loopback_downloads(monkeypatch):
    """The operator allows private addresses (the test's image server is on 127.0.0.1); set before
    `app` starts the server, whose download worker inherits it."""
    from core.data.download import ALLOW_ENV
    monkeypatch.setenv(ALLOW_ENV, "1")


def grid_text(page) -> str:
    """The cells the data grids draw (glide-data-grid keeps an accessible copy of them in the DOM)."""
    return " | ".join(page.locator(GRID).all_text_contents())


def selection_stays_while_a_sweep_queues(page, app, demo):
    from playwright.sync_api import expect

    from core.runs.store import RunStore
    from tests.conftest import tiny_config
    store = RunStore()
    child = done_run(store, demo, epochs=(0.3,))
    busy = store.create(tiny_config(demo, classes=3), status="running")   # a sweep's trial holds the slot
    store.set(busy, pid=os.getpid(), heartbeat=time.time())
    page.goto(app + f"/runs?run={child}")
    expect(page.get_by_role("heading").filter(has_text=child[-4:]).first).to_be_visible()
    trial = store.create(tiny_config(demo, classes=2), status="queued")  # the sweep queues its next trial
    deadline = time.monotonic() + 60
    while trial[-4:] not in grid_text(page):                              # the live table has shown it
        assert time.monotonic() < deadline, grid_text(page)
        store.set(busy, heartbeat=time.time())
        page.wait_for_timeout(500)
    page.wait_for_timeout(3000)                                           # a few more refreshes
    assert page.url.endswith(f"run={child}"), page.url
    expect(page.get_by_role("heading").filter(has_text=child[-4:]).first).to_be_visible()
    store.set(busy, status="cancelled")
    store.set(trial, status="cancelled")


def one_val_acc_on_runs_and_sweeps(page, app, demo, monkeypatch):
    from playwright.sync_api import expect

    from core.cli import main
    from core.runs import jobs
    from core.runs.store import RunStore

    def trained(store, job_id, slot=None):        # a stand-in for the worker: best epoch 0.5, last 0.25
        for e, acc in enumerate((0.5, 0.25), 1):
            store.log_epoch(job_id, {"epoch": e, "val_acc": acc, "train_acc": 0.9})
        store.set(job_id, status="done", finished=time.time(),
                  summary={"train_acc": 0.9, "val_acc": 0.25, "holdout_acc": 0.4})
    monkeypatch.setattr(jobs, "spawn", trained)
    assert main(["reproduce", "--data", str(demo), "--classes", "3", "--models", "small_cnn", "--quick"]) == 0
    trial = next(r for r in RunStore().list() if r["summary"].get("holdout_acc") == 0.4)
    page.goto(app + f"/runs?run={trial['run_id']}")
    page.wait_for_function(f"document.querySelector('{GRID}') !== null")
    _until_settled(page, lambda: "0.250" in grid_text(page))
    assert "0.500" not in grid_text(page)
    page.goto(app + "/sweeps")
    expect(page.locator(GRID).first).to_be_visible()
    _until_settled(page, lambda: "0.250" in grid_text(page) or "0.25" in page.inner_text("main"))
    assert "0.500" not in grid_text(page) and "0.5 " not in page.inner_text("main")


LEGENDS = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .map(g => [...g.querySelectorAll('.legendtext')].map(t => t.textContent)).flat()"""


def names_in_evaluate_and_compare(page, app, demo):
    from core.runs.store import RunStore
    store = RunStore()
    a = done_run(store, demo, name="baseline")
    b = done_run(store, demo, name="wider head")
    for r in (a, b):
        store.log_eval(r, "holdout", {"n": 12, "acc": 0.4, "labels": ["a", "b", "c", "d"]})
    page.goto(app + "/evaluate")
    page.wait_for_function(f"document.querySelector('{GRID}') !== null")
    _until_settled(page, lambda: "baseline" in grid_text(page))
    assert "wider head" in grid_text(page)
    page.goto(app + f"/compare?runs={a},{b}")
    page.wait_for_function(f"({LEGENDS})().length >= 2")
    legends = set(page.evaluate(LEGENDS))
    assert {"baseline", "wider head"} <= legends, legends
    assert not any(a[-4:] in l or b[-4:] in l for l in legends), legends


def download_panel_keeps_its_result_and_form(page, app, home, tmp_path):
    from playwright.sync_api import expect

    from tests.test_download import Server, iid, write_csv
    server = Server()
    try:
        f = write_csv(home / "datasets" / "incoming" / "train.csv",          # where the browser may open it
                      [(iid(f"w{i}"), server.url(f"/img/w{i}"), str(i % 2)) for i in range(6)])
        out = home / "datasets" / "week2-top1"
        page.goto(app + "/")
        page.get_by_text("Get Google Landmarks").first.click()
        page.get_by_role("textbox", name="Google Landmarks train.csv").fill(str(f))
        page.get_by_role("spinbutton", name="Top N classes").fill("1")
        page.get_by_role("textbox", name="Output folder").fill(str(out))
        page.get_by_role("textbox", name="Output folder").press("Enter")
        page.get_by_role("button", name="Start the download").click()
        expect(page.get_by_text("3 of 3 images of the top 1", exact=False).first).to_be_visible(timeout=180_000)
        page.wait_for_timeout(2000)                                           # the panel stays as it ended
        expect(page.get_by_text("3 of 3 images of the top 1", exact=False).first).to_be_visible()
        expect(page.get_by_role("textbox", name="Google Landmarks train.csv")).to_have_value(str(f))
        expect(page.get_by_role("spinbutton", name="Top N classes")).to_have_value("1")
        expect(page.get_by_role("button", name="Use week2-top1 on every page")).to_be_visible()
    finally:
        server.close()


def one_export_expander(page, app, home):
    from playwright.sync_api import expect

    from core.runs.jobs import run_job
    from core.runs.store import RunStore
    from tests.conftest import tiny_config
    store = RunStore()
    run_id = store.create(tiny_config(home / "datasets" / "demo", epochs=1, image_size=16), status="running")
    assert run_job(store, run_id)["status"] == "done"
    page.goto(app + f"/runs?run={run_id}")
    box = page.get_by_test_id("stExpander").filter(has_text="Download the model")
    expect(box).to_have_count(1)
    box.get_by_text("Download the model").first.click()
    box.get_by_role("button", name="Prepare ONNX export").click()
    expect(box.get_by_role("button", name="Download ONNX model", exact=False)).to_be_visible(timeout=240_000)
    expect(page.get_by_test_id("stExpander").filter(has_text="Download the model")).to_have_count(1)
    expect(box.get_by_role("button", name="Prepare ONNX export")).to_have_count(0)


@pytest.mark.e2e
def test_a_users_second_week(loopback_downloads, app, home, demo_root, tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)
        try:
            selection_stays_while_a_sweep_queues(page, app, demo_root)
            one_val_acc_on_runs_and_sweeps(page, app, demo_root, monkeypatch)
            names_in_evaluate_and_compare(page, app, demo_root)
            download_panel_keeps_its_result_and_form(page, app, home, tmp_path)
            one_export_expander(page, app, home)
        except Exception:
            shots = os.environ.get("SCREENSHOTS")                  # what the page showed, where asked
            if shots:
                page.screenshot(path=os.path.join(shots, "week2-failed.png"), full_page=True)
            raise
        finally:
            browser.close()
