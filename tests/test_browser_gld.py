"""Real browser (issue 20): the Dataset page's Fig. 1 of a GLDv2 train.csv with integer landmark
ids and percent-encoded category names draws the bars on a categorical axis, most frequent class
at the top, labelled with the decoded names (not bars at y = 83, 138982 … on a numeric axis).
Only one landmark has a name: two bare ids against one name is what made plotly guess a
numeric axis and drop the named bar."""
from test_browser import ARGS, CHROMIUM, app, chromium  # noqa: F401 - the server and browser fixtures
from test_gld_formats import COUNTS, DECODED, MARBACK, write_gld

FIG1 = """() => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')]
    .find(g => ((g.layout.title || {}).text || '').includes('Class distribution'));
  if (!gd || !gd._fullLayout || !gd._fullData) return null;   // drawn yet?
  const ticks = [...gd.querySelectorAll('.ytick text')]
    .map(t => [t.textContent, t.getBoundingClientRect().top]).sort((a, b) => a[1] - b[1]).map(t => t[0]);
  return {y: Array.from(gd._fullData[0].y), x: Array.from(gd._fullData[0].x), type: gd._fullLayout.yaxis.type, ticks: ticks};
}"""


def test_integer_ids_draw_in_frequency_order_with_decoded_names(app, home):
    from playwright.sync_api import expect, sync_playwright
    write_gld(home / "datasets" / "gld", names={20409: MARBACK})   # found under datasets/, offered as "gld"
    order = ["138982", DECODED["20409"], "83"]         # 5, 4 and 2 images
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(app + "/dataset?data=gld")
        expect(page.get_by_text("Class distribution of the 3 most frequent classes")).to_be_visible(timeout=60_000)
        page.wait_for_function(f"({FIG1})() !== null")
        fig = page.evaluate(FIG1)
        browser.close()
    assert fig["type"] == "category"
    assert fig["y"] == order and fig["x"] == list(COUNTS.values())
    assert fig["ticks"] == order                       # top to bottom as drawn: most frequent first
