"""Real browser: streamlit run dashboard/app.py on a free port, headless Chromium via Playwright.

A new user's path: the Dataset page shows the (synthetic) demo, the Train page launches a run
from the preset (with the small CNN, so it trains in seconds), the Runs page shows its curve and
final accuracy, and the Classify page takes an uploaded photo and shows the top-5 and a saliency
overlay.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

INSTALL = "apt-get install -y chromium"       # what .ci/run does (Debian's package; Ubuntu: chromium-browser)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser, or a failure that says how to get it: a missing browser is not a pass."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"The browser tests need Chromium at {CHROMIUM}, which is not installed; install it with "
                    f"`{INSTALL}` (as .ci/run does) and run the tests again.", pytrace=False)
    return CHROMIUM


# `streamlit run` with the app's internet probe answering "offline" (a subprocess escapes the suite's
# in-process network guard; this probe opens a raw socket, which the guard's dead proxy does not stop)
OFFLINE_STREAMLIT = ("import sys; import dashboard.common as c; c.internet_reachable = lambda *a, **k: False; "
                     "from streamlit.web.cli import main; sys.exit(main())")


def _until_settled(page, ok, timeout_s: float = 120.0) -> None:
    """Wait until no script run is in progress (Streamlit marks its root `data-test-script-state`; a
    rerun's stale elements stay on the page until it ends) and `ok()` holds."""
    import time
    idle = page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if idle.count() == 1 and ok():
            return
        page.wait_for_timeout(200)
    raise AssertionError("the page did not settle in the expected state")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app(chromium, home, demo_root, tmp_path):
    shutil.copytree(demo_root, home / "datasets" / "demo")  # the tiny demo, so the run takes seconds
    port = _free_port()
    env = dict(os.environ, LANDMARKS_HOME=str(home), OMP_NUM_THREADS="2")
    log = open(tmp_path / "streamlit.log", "wb")
    p = subprocess.Popen([sys.executable, "-c", OFFLINE_STREAMLIT, "run", "dashboard/app.py", "--server.port", str(port),
                          "--server.headless", "true", "--server.address", "127.0.0.1"],
                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        p.kill()
        raise AssertionError((tmp_path / "streamlit.log").read_text()[-3000:])
    yield url
    os.killpg(p.pid, 15)
    p.wait(20)
    from core.runs import jobs
    from core.runs.store import RunStore
    store = RunStore()
    for r in store.list():  # stop any worker the test started
        if r["status"] in ("queued", "starting", "running"):
            jobs.cancel(store, r["run_id"])


def test_new_user_path(app, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    from PIL import Image
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)  # a loaded 2-core CI machine is slow; expect's default is 5 s
        page.goto(app)
        expect(page.get_by_text("synthetic", exact=False).first).to_be_visible()
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        page.screenshot(path=str(tmp_path / "dataset.png"))

        page.goto(app + "/train")
        page.get_by_role("button", name="Quick demo run preset").click()
        expect(page.get_by_text("Preset filled in")).to_be_visible()   # the rerun has finished
        model = page.get_by_role("combobox", name="Model")             # the preset's model takes minutes
        model.click()                                                  # on 2 cores: the small CNN, seconds
        page.get_by_role("option", name="small_cnn", exact=True).click()
        expect(model).to_have_value("small_cnn")
        # the model's change reruns the page and sets Weights to None; launch only once that rerun is in
        # (clicking during it is the rerun race issue 21 names: the check then sees the old weights)
        _until_settled(page, lambda: page.get_by_role("radio", name="None (from scratch)").count() == 1
                       and page.get_by_role("radio", name="None (from scratch)").is_checked())
        page.get_by_role("button", name="Launch training run").click()
        expect(page.get_by_text("Follow it on the Runs page")).to_be_visible()

        page.goto(app + "/runs")
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=240_000)
        expect(page.get_by_text("Holdout accuracy").first).to_be_visible(timeout=300_000)
        page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)

        photo = next((Path(os.environ["LANDMARKS_HOME"]) / "datasets" / "demo" / "train").rglob("*.jpg"))
        upload = tmp_path / "my_photo.png"
        Image.open(photo).save(upload)
        page.goto(app + "/classify")
        page.locator("input[type=file]").first.set_input_files(str(upload))
        expect(page.get_by_text("my_photo.png").first).to_be_visible()
        expect(page.get_by_text("Top-5", exact=False).first).to_be_visible()
        # the saliency overlay is drawn with a caption naming the method and the class
        expect(page.get_by_text("Saliency map (Simonyan et al. 2014) · class").first).to_be_visible()
        page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)
        shots = os.environ.get("SCREENSHOTS")
        if shots:
            for f in ("dataset.png", "runs.png", "classify.png"):
                shutil.copy(tmp_path / f, Path(shots) / f)
        browser.close()
