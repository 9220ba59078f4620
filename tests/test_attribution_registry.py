"""An attribution method is one class: adding a toy one in this file alone makes it appear in the
Classify page (option, caption, legend, faithfulness row) and in the CLI (`predict --explain toy`,
its help), and it leaves the registry when its test ends."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import cli
from core.errors import UserError
from core.explain import KINDS, METHODS, Method, register

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
BUILT_IN = ["saliency", "vanilla", "guided", "gradcam", "integrated_gradients", "smoothgrad"]


class Toy(Method):
    """The image itself as its own attribution: bright pixels "matter" most. Not decorated with
    @register, so defining it offers it nowhere; the fixture registers it for one test at a time."""

    name = "toy"
    label = "Toy: the photo's own brightness"
    kind = "heat"
    legend = "Bright: a bright pixel of the photo; dark: a dark one (the toy method of the registry test)."
    cost = 0

    def _attribute(self, x, target):
        return x * 1.0


@pytest.fixture
def toy():
    before = dict(METHODS)
    register(Toy)
    yield Toy
    METHODS.pop(Toy.name)
    assert METHODS == before and list(METHODS) == list(before)   # nothing leaks into other tests


def test_the_built_in_methods_describe_themselves():
    assert list(METHODS) == BUILT_IN
    for name, cls in METHODS.items():
        assert cls.name == name and cls.label and cls.legend.endswith(".") and cls.kind in KINDS
    assert {m for m, c in METHODS.items() if c.kind == "signed"} == {"vanilla", "guided", "integrated_gradients"}
    # the cost is the passes the method makes, from the same constant the method uses
    assert {m: c.cost for m, c in METHODS.items()} == {
        "saliency": 1, "vanilla": 1, "guided": 1, "gradcam": 1, "integrated_gradients": 32, "smoothgrad": 16}
    assert METHODS["integrated_gradients"](None).n_steps == 32 and METHODS["smoothgrad"](None).nt_samples == 16
    assert "16 noisy copies" in METHODS["smoothgrad"].legend


def test_register_refuses_a_half_described_or_second_method():
    class NoLegend(Toy):
        legend = ""

    class Odd(Toy):
        name, kind = "odd", "rainbow"

    class Again(Toy):
        pass

    with pytest.raises(ValueError, match="^NoLegend needs a name, a label and a legend to be registered.$"):
        register(NoLegend)
    with pytest.raises(ValueError, match=r"^Odd.kind is 'rainbow'; it must be one of: signed, heat\.$"):
        register(Odd)
    register(Toy)
    try:
        register(Toy)   # registering the same class twice is harmless (a re-imported module)
        with pytest.raises(ValueError, match="^An attribution method named 'toy' is registered already"):
            register(Again)
    finally:
        METHODS.pop("toy")
    assert list(METHODS) == BUILT_IN


def test_the_toy_in_classify(use_trained_home, toy):
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page("../pages/classify.py")
    at.run()
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (30, 60, 90)).save(buf, "PNG")
    at.file_uploader(key="clf_upload").set_value([("grey.png", buf.getvalue(), "image/png")]).run()
    assert at.multiselect(key="clf_methods").options[-1] == toy.label   # offered, under its label
    at.multiselect(key="clf_methods").set_value(["toy"]).run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c for im in at.image for c in im.captions]
    assert any(c.startswith(f"{toy.label} · class “") for c in captions)
    assert toy.legend in [c.value for c in at.caption]               # its sentence under the map
    faith = at.dataframe[-1].value
    assert list(faith["method"]) == [toy.label] and np.isfinite(faith["score"]).all()


def test_the_toy_in_the_cli(use_trained_home, toy, tmp_path, capsys):
    home, run_ids = use_trained_home
    photo = tmp_path / "tower.png"
    Image.new("RGB", (48, 48), (200, 100, 50)).save(photo)
    with pytest.raises(SystemExit) as shown:
        cli.main(["predict", "--help"])
    assert shown.value.code == 0
    assert "gradcam, integrated_gradients, smoothgrad, toy" in " ".join(capsys.readouterr().out.split())

    out = tmp_path / "maps"
    assert cli.main(["predict", "--run", run_ids[0], str(photo), "--explain", "toy", "--out", str(out),
                     "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    (e,) = item["explanations"]
    assert e["method"] == "toy" and e["png"] == str(out / "tower_toy.png") and e["target"] == item["top"][0]["name"]
    assert Image.open(e["png"]).size == (32, 32) and -1 <= e["faithfulness"] <= 1   # the run's 32 px input

    # an unknown name: one sentence listing every registered method, the toy too; exit 2, nothing written
    assert cli.main(["predict", "--run", run_ids[0], str(photo), "--explain", "toy,nope", "--out",
                     str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: Unknown explanation method 'nope'; choose one of: saliency, vanilla, guided, gradcam, "
                   "integrated_gradients, smoothgrad, toy.")
    assert not (tmp_path / "none").exists()


def test_the_toy_is_gone_after_its_tests(capsys):
    """Runs after the toy's tests in this file: the registry, the CLI help and its check forgot it."""
    assert "toy" not in METHODS
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert "toy" not in capsys.readouterr().out
    with pytest.raises(UserError, match="choose one of: saliency, vanilla, guided, gradcam, "
                                        r"integrated_gradients, smoothgrad\.$"):
        cli._explain_methods("toy")
