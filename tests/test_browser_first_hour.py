"""Real browser (headless Chromium + Playwright) over what a new user's first hour tripped over:
a run on every class shows its real class count, a reload keeps the selected run and the data set
in use, the Runs table fits 1,400 px without a horizontal scroll, ImageNet weights that cannot be
had offline are refused in the Train form."""
import time

from core.runs.jobs import run_job
from core.runs.store import RunStore
from tests.conftest import tiny_config
from tests.test_browser import ARGS, CHROMIUM, app, chromium  # noqa: F401 - fixtures: streamlit on a free port


def _browser(pw):
    from playwright.sync_api import expect
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    expect.set_options(timeout=120_000)
    return browser, page


def _two_runs(data) -> tuple[str, str]:
    store = RunStore()
    ids = []
    for classes in (0, 3):                          # 0: every class of the data set
        run_id = store.create(tiny_config(data, classes=classes, epochs=1, image_size=16), status="running")
        assert run_job(store, run_id)["status"] == "done"
        ids.append(run_id)
    return ids[0], ids[1]


def test_all_classes_count_reload_keeps_run_and_table_fits(app, home):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright
    every, three = _two_runs(home / "datasets" / "demo")
    with sync_playwright() as pw:
        browser, page = _browser(pw)
        page.goto(app + "/runs")
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        expect(page.get_by_role("heading").filter(has_text=three).first).to_be_visible()  # the newest run is selected
        # the run on every class says how many, nowhere "0 classes"
        page.goto(app + f"/runs?run={every}")
        expect(page.get_by_role("heading", name=f"all 4 classes").first).to_be_visible()
        assert "0 classes" not in page.inner_text("main")
        # at 1,400 px the main table needs no horizontal scroll
        page.wait_for_selector('[data-testid="stDataFrame"] .dvn-scroller')
        widths = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
                                  .map(e => [e.scrollWidth, e.clientWidth])""")
        assert widths and widths[0][0] <= widths[0][1] + 1, widths
        # pick the other run in the select box: the address follows, and a reload keeps it
        page.get_by_test_id("stSelectbox").filter(has_text="Run").first.click()
        page.get_by_role("option").filter(has_text=three).first.click()
        page.wait_for_url(f"**run={three}**")
        page.reload()
        expect(page.get_by_role("heading").filter(has_text=three).first).to_be_visible()
        assert page.url.endswith(f"run={three}")
        # the data set in use is in the address too, on every page
        page.goto(app + "/train")
        page.wait_for_url("**data=demo**")
        page.reload()
        expect(page.get_by_role("combobox", name="Data set")).to_have_value("Demo (synthetic landmarks)")
        assert "data=demo" in page.url
        browser.close()


def test_imagenet_without_internet_is_refused_in_the_form(app, home):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as pw:
        browser, page = _browser(pw)
        page.goto(app + "/train")
        model = page.get_by_role("combobox", name="Model")
        model.click()
        page.get_by_role("option", name="resnet18", exact=True).click()
        expect(model).to_have_value("resnet18")
        page.get_by_text("ImageNet", exact=True).first.click()
        page.get_by_role("button", name="Launch training run").click()
        expect(page.get_by_text("without internet", exact=False).first).to_be_visible()
        time.sleep(1)
        assert RunStore().list() == []                                  # nothing was queued
        browser.close()
