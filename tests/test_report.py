"""The poster regenerated (issue 24): `python -m core report` writes one self-contained HTML file with
each figure; runs of two data sets are said to be so; a model card RUN.md lies beside every export;
the Report page builds a report in a real browser (e2e)."""
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from core.runs.store import RunStore
from tests.test_browser import ARGS, CHROMIUM, _until_settled, app, chromium  # noqa: F401 - the e2e fixtures
from tests.test_export import exported  # noqa: F401 - the shared export (a session fixture)

SECTIONS = ("fig1", "fig2", "holdout", "fig3", "fig4", "fig5", "fig6", "fig7", "provenance")


class Page(HTMLParser):
    """Every src/href, every element id, the text of table cells, and <script src> (there must be none)."""

    def __init__(self, text: str):
        super().__init__()
        self.links, self.ids, self.cells, self.images = [], set(), [], 0
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if "id" in a:
            self.ids.add(a["id"])
        self.images += tag == "img" and (a.get("src") or "").startswith("data:image/png;base64,")
        if tag == "td":
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell.strip())
            self._cell = None


def _report(capsys, *argv) -> dict:
    from core.cli import main
    assert main(["report", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_report_of_the_trained_runs_is_one_self_contained_html_with_every_figure(use_trained_home, tmp_path, capsys):
    home, ids = use_trained_home
    out = _report(capsys, "--runs", *ids, "--out", str(tmp_path / "r.html"))
    files = [f for f in tmp_path.iterdir() if f.is_file()]
    assert files == [tmp_path / "r.html"] and out["path"] == str(tmp_path / "r.html") and out["notes"] == []
    page = Page((tmp_path / "r.html").read_text())
    external = [u for u in page.links if u.lower().startswith(("http://", "https://", "//"))]
    assert external == [] and page.links and all(u.startswith("data:") for u in page.links)
    assert set(SECTIONS) <= page.ids
    assert "no-sweep" in page.ids and "different-data" not in page.ids     # no sweep: the runs' curves, and it says so
    store = RunStore()
    for rid in ids:                                                        # the holdout table: each run's numbers
        ho = store.evals(rid)["holdout"]["acc"]
        assert f"{ho:.3f}" in page.cells
    # Figs. 5–6: per run, each photo with its saliency and vanilla maps (3 images a photo); Fig. 7: none made yet
    assert page.images >= 2 * 3 and page.images % 3 == 0
    assert (tmp_path / "r.html").read_text().count("class='missing'") == 4 + 3


def test_a_report_over_runs_of_two_data_sets_says_so_and_goes_on(use_trained_home, tmp_path, capsys):
    home, ids = use_trained_home
    run = RunStore().require(ids[1])
    cfg = json.loads(run.config_file.read_text())
    cfg["data"] = str(tmp_path / "gone")                                   # another data set, no longer on disk
    run.config_file.write_text(json.dumps(cfg))
    photo = tmp_path / "p.png"
    from PIL import Image
    Image.new("RGB", (40, 30), (200, 30, 30)).save(photo)
    out = _report(capsys, "--runs", *ids, "--photos", str(photo), "--out", str(tmp_path / "r.html"))
    text = (tmp_path / "r.html").read_text()
    page = Page(text)
    assert "different-data" in page.ids and out["data_sets"][1] == str(tmp_path / "gone")
    assert out["notes"] == [f"These runs were trained on 2 different data sets ({out['data_sets'][0]}: {ids[0]}; "
                            f"{tmp_path / 'gone'}: {ids[1]}); their numbers are not comparable with each other, and "
                            "each figure names its run."]
    assert f"the classes run {ids[1]} used instead" in text                # Fig. 1 of the missing set: its split
    assert page.images == 2 * 3                                            # the one photo given, for each run


def test_report_refuses_a_missing_run_and_photo_in_one_sentence(use_trained_home, tmp_path, capsys):
    from core.cli import main
    _, ids = use_trained_home
    assert main(["report", "--runs", "nope", "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: There is no run 'nope'")
    assert main(["report", "--runs", ids[0], "--photos", str(tmp_path / "no.jpg"), "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: The photo {tmp_path / 'no.jpg'} for Figs. 5–6 does not exist; "
                                               "give image files to --photos.")
    assert not (tmp_path / "r.html").exists()


def test_a_model_card_lies_beside_every_export(exported):
    store, run_id, out = exported
    for fmt in ("onnx", "torchscript"):
        assert out[fmt]["card"] == str(Path(out[fmt]["path"]).parent / f"{run_id}.md")
    card = Path(out["onnx"]["card"]).read_text()
    ho = store.evals(run_id)["holdout"]
    assert card.startswith(f"# Model card: {run_id}\n")
    assert f"| accuracy | {ho['acc']:.4f} |" in card and f"images: {store.evals(run_id)['train']['n']} train" in card
    weakest = sorted((v, i) for i, v in enumerate(ho["per_class"]) if v is not None)[:5]
    rows = [ln for ln in card.splitlines() if ln.startswith("| ") and ln.count("|") == 4 and "holdout" not in ln]
    assert rows[-len(weakest):] == [f"| {ho['names'][i]} | {v:.3f} | {ho['support'][i]} |" for v, i in weakest]
    assert "resized bilinear to 32x32" in card
    assert "\nProvenance:\n" in card and '"commit"' in card and '"packages"' in card     # the run's record


def test_the_card_of_a_seed_group_gives_the_groups_mean_and_sd(use_trained_home, exported):
    import numpy as np

    from core.serve.card import model_card
    _, ids = use_trained_home
    store = RunStore()
    for rid in ids:                                                        # both runs: one seed group
        f = store.require(rid).config_file
        f.write_text(json.dumps({**json.loads(f.read_text()), "group": ids[0]}))
    (store.require(ids[0]).dir / "provenance.json").write_text(json.dumps({"code": {"commit": "abc123"}}))
    card = model_card(store.require(ids[0]), exported[2]["onnx"])
    accs = np.array([store.evals(r)["holdout"]["acc"] for r in ids])
    assert f"| accuracy | {accs[0]:.4f} | {accs.mean():.4f} ± {accs.std(ddof=1):.4f} (2) |" in card
    assert '"commit": "abc123"' in card and card.count("Provenance:") == 1


@pytest.fixture
def report_home(home, trained_home):
    """The app's home holds the two trained runs before the server starts."""
    shutil.copytree(trained_home[0], home, dirs_exist_ok=True)
    return home, trained_home[1]


@pytest.mark.e2e
def test_the_report_page_builds_a_report_and_offers_it(report_home, app):
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)
        home, ids = report_home
        page.goto(app + "/report?runs=" + ",".join(ids))
        _until_settled(page, lambda: page.get_by_role("button", name="Build the report").count() == 1)
        page.get_by_role("button", name="Build the report").click()
        expect(page.get_by_role("button", name="Download the report")).to_be_visible()
        expect(page.locator("iframe")).to_have_count(1)                    # the preview
        browser.close()
    reports = list((home / "reports").glob("report-*.html"))
    assert len(reports) == 1 and "id='fig7'" in reports[0].read_text()


def test_fig2_shows_every_trial_of_a_sweep_a_run_belongs_to(use_trained_home):
    from core.report import _fig2
    from core.runs.tasks import sweep_trials
    _, ids = use_trained_home
    store = RunStore()
    for k, rid in enumerate(ids):
        store.set_job(rid, args={"sweep": "lr", "trial": k})
    trials = sweep_trials(store, [store.require(ids[0])])                 # one trial chosen: its sweep's every trial
    last = {rid: store.require(rid).read_epochs()[-1]["val_acc"] for rid in ids}    # as every page shows it
    assert {t["run_id"]: t["val_acc"] for t in trials["lr"]} == last
    assert sorted(t["label"].split()[0] for t in trials["lr"]) == ["#0", "#1"]
    html = _fig2([store.require(ids[0])], trials)
    assert "The sweep&#x27;s validation accuracies" in html and "no-sweep" not in html
