"""Real browser (e2e tier, `make e2e`): on the Evaluate page, click a confusion cell and see its
photos; compute the run's embeddings (a real worker process), click a point of the map and see the
photo's nearest training photos; find label issues (a worker), exclude two of them into a new
version of the data set, use it and train on it from the Train page (issue 22's loop). Reuses the
server and browser of tests/test_browser.py."""
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.test_browser import ARGS, CHROMIUM, _until_settled, app, chromium  # noqa: F401 - fixtures

# page coordinates of a trace's point in the plotly chart whose y axis is titled `axis` ("map": the WebGL one)
POINT = """([axis, trace, i]) => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')]
    .find(g => g._fullLayout && g._fullData && (axis === 'map' ? (g._fullData[0] || {}).type === 'scattergl'
      : (((g._fullLayout.yaxis || {}).title || {}).text || '') === axis));
  if (!gd || !gd._fullData || !gd._fullData[trace]) return null;
  gd.scrollIntoView({block: 'center', behavior: 'instant'});      // here, not by a locator: a rerun may replace the element meanwhile
  const d = gd._fullData[trace], L = gd._fullLayout, box = gd.getBoundingClientRect();
  return {x: box.left + L._size.l + L.xaxis.l2p(d.x[i]), y: box.top + L._size.t + L.yaxis.l2p(d.y[i]),
          custom: d.customdata ? Array.from(d.customdata[i]).map(String) : null, n: d.x.length};
}"""


@pytest.fixture
def trained(home, trained_home):
    """The two trained runs in the server's home (before `app` starts the server)."""
    shutil.copytree(trained_home[0], home, dirs_exist_ok=True)
    return trained_home[1]


def _shot(page, name: str, at) -> None:
    """A screenshot scrolled to `at` into $SCREENSHOTS, when set (the README's pictures of the loop)."""
    if os.environ.get("SCREENSHOTS"):
        at.scroll_into_view_if_needed()
        page.wait_for_timeout(2000)                              # the thumbnails load after the text
        page.screenshot(path=str(Path(os.environ["SCREENSHOTS"]) / name))


def _point(page, axis: str, trace: int, i: int):
    return page.evaluate(POINT, [axis, trace, i])


def _click_point(page, axis: str, trace: int, i: int, ok, tries: int = 3) -> None:
    """Click a chart's point until `ok()` (a click that lands while the chart is still being drawn
    or scrolled is lost: click again, as a user would)."""
    for _ in range(tries):
        page.wait_for_timeout(500)
        pt = _point(page, axis, trace, i)
        page.mouse.click(pt["x"], pt["y"])
        try:
            return _until_settled(page, ok, timeout_s=30)
        except AssertionError:
            continue
    raise AssertionError(f"clicking point {i} of the {axis!r} chart never showed what it should")


GRID = '[data-testid="stDataFrame"]'


def _select_rows(page, grid, rows: list[int], row_h: int) -> None:
    """Tick rows of a data grid's selection column (glide draws it on a canvas: click where it is)."""
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    header = 35                                                  # Streamlit's header row, px
    for i in rows:
        page.mouse.click(box["x"] + 18, box["y"] + header + row_h * i + row_h / 2)
        page.wait_for_timeout(700)


def exclude_two_issues_into_a_version_and_train_on_it(page, app, run_id: str) -> None:
    from playwright.sync_api import expect

    from core.data import versions
    from core.data.readers import load_index
    from core.data.splits import base_places, load_manifest
    from core.runs.store import RunStore
    from dashboard.inspect_panel import THUMB
    store = RunStore()
    page.goto(f"{app}/evaluate?run={run_id}")
    page.get_by_role("button", name="Find label issues and duplicates").click()
    title = page.get_by_text(re.compile(r"most likely wrong first"))
    _until_settled(page, lambda: title.count() > 0, timeout_s=300)
    grid = title.first.locator("xpath=following::*[@data-testid='stDataFrame'][1]")
    _select_rows(page, grid, [0, 1], THUMB + 8)
    _until_settled(page, lambda: page.get_by_text("with the 2 selected photos").count() > 0, timeout_s=60)
    page.get_by_text("Exclude them", exact=True).click()
    page.get_by_role("textbox", name="Version name").fill("without-two")
    page.get_by_role("textbox", name="Reason (kept with each change)").fill("wrong landmark")
    page.get_by_role("button", name="Create the version").click()
    expect(page.get_by_text("Version without-two of", exact=False)).to_be_visible()
    _shot(page, "evaluate_inspect.png", title.first)
    page.get_by_role("button", name="Use without-two on every page").click()
    page.wait_for_url("**data=without-two**")
    page.goto(f"{app}/train?data=without-two")
    model = page.get_by_role("combobox", name="Model")
    model.click()
    page.get_by_role("option", name="small_cnn", exact=True).click()
    _until_settled(page, lambda: page.get_by_role("radio", name="None (from scratch)").count() == 1
                   and page.get_by_role("radio", name="None (from scratch)").is_checked())
    page.get_by_role("spinbutton", name="Epochs").fill("1")
    page.get_by_role("button", name="Launch training run").click()
    expect(page.get_by_text("Follow it on the Runs page")).to_be_visible()
    run = next(r for r in store.list() if r["run_id"] != run_id and "without-two" in str(r["config"]["data"]))
    v = versions.read_version(run["config"]["data"])
    gone = set(v.changes["path"])
    assert len(gone) == 2 and set(v.changes["action"]) == {"exclude"}
    for _ in range(600):                                         # trained by a worker process
        if store.get(run["run_id"])["status"] in ("done", "failed"):
            break
        page.wait_for_timeout(500)
    assert store.get(run["run_id"])["status"] == "done", store.get(run["run_id"])
    mine = load_manifest(store.run(run["run_id"]).split_file)
    names = {p.rsplit("/", 1)[-1] for p in gone}
    assert not any(p.rsplit("/", 1)[-1] in names for p in mine["path"])     # the two photos left the version
    cfg = store.run(run["run_id"]).config()                                 # the base split these settings draw
    base = base_places(load_index(v.base).samples, cfg.classes, cfg.holdout, cfg.val, cfg.data_seed, cfg.max_images)
    hold = {p.rsplit("/", 1)[-1] for p in base[base == "holdout"].index} - names
    assert {p.rsplit("/", 1)[-1] for p in mine.loc[mine["split"] == "holdout", "path"]} == hold


@pytest.mark.e2e
def test_click_a_confusion_cell_then_a_map_point(trained, app, home):
    from playwright.sync_api import expect, sync_playwright
    from core.runs.store import RunStore
    run_id = trained[0]
    preds = pd.read_parquet(RunStore().run(run_id).predictions_file("val"))
    wrong = preds[preds["pred"] != preds["target"]]
    t, p = wrong.groupby(["target", "pred"]).size().idxmax()
    want = preds[(preds["target"] == t) & (preds["pred"] == p)].sort_values("conf", ascending=False)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)
        page.goto(f"{app}/evaluate?run={run_id}")
        page.locator('[data-testid="stRadio"] label').filter(has_text=re.compile(r"^Validation")).first.click()
        _until_settled(page, lambda: page.get_by_role("radio", name=re.compile(r"^Validation")).is_checked()
                       and _point(page, "true class", 1, 0) is not None)
        # 1. a confusion cell (the clickable marker over cell (true t, predicted p)) -> exactly its photos
        n = _point(page, "true class", 1, 0)["n"]
        classes = int(round(n ** 0.5))
        _click_point(page, "true class", 1, int(t) * classes + int(p),
                     lambda: page.get_by_text(re.compile(r"^Photos of ")).count() > 0)
        for name in want["path"].map(lambda s: s.rsplit("/", 1)[-1]):
            expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
        _shot(page, "evaluate_cell.png", page.get_by_text(re.compile(r"^Photos of ")).first)
        # 2. compute the embeddings (a worker process), click a point of the map -> its neighbours
        page.get_by_role("button", name="Compute embeddings").click()
        _until_settled(page, lambda: _point(page, "map", 0, 0) is not None and page.get_by_text(
            "Map of the embeddings").count() > 0, timeout_s=300)
        _shot(page, "evaluate_map.png", page.get_by_text("Map of the embeddings"))
        _click_point(page, "map", 0, 0, lambda: page.get_by_text("Nearest training photos", exact=True).count() > 0)
        expect(page.get_by_text("Nearest training photos", exact=True)).to_be_visible()
        expect(page.get_by_text(re.compile(r"\(\d\.\d\d\)$")).first).to_be_visible()   # a neighbour's similarity
        expect(page.get_by_text(re.compile(r"^Grad-CAM · class")).first).to_be_visible()  # its explanation map
        _shot(page, "evaluate_photos.png", page.get_by_text("Nearest training photos", exact=True))
        exclude_two_issues_into_a_version_and_train_on_it(page, app, run_id)
        browser.close()
