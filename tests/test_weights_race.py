"""Issue 21: the Weights radio and the Launch check agree. Launch reads the value the radio returned
in that run (pages/train.py: form() -> submit()), so a radio showing None is never refused with the
ImageNet sentence, and a radio showing ImageNet (offline, not cached) always is."""
import time

from core.runs.store import RunStore
from tests.conftest import tiny_config
from tests.test_pages_dataset_train import demo_home, page  # noqa: F401 - the fixture

REFUSED = ("ResNet-18's ImageNet weights are not on this machine and cannot be downloaded without internet. "
           "Choose Weights: None (from scratch), a weight file, or the model EfficientNet-Lite0, whose ImageNet "
           "weights come with the app.")


def test_launch_reads_the_radio_through_model_changes_and_a_run_ending(demo_home, monkeypatch):
    launched = []
    monkeypatch.setattr("core.runs.jobs.launch", lambda cfg, s: launched.append(cfg) or "queued-run")
    store = RunStore()                                       # a run in the background: the queue refreshes
    other = store.create(tiny_config(str(demo_home / "datasets" / "demo")), status="running")
    at = page("train.py").run()
    assert at.radio(key="train_weights").value == "imagenet"  # EfficientNet-Lite0: weights ship with the app
    at.number_input(key="train_classes").set_value(3)

    at.selectbox(key="train_model").select("resnet18").run()  # no offline weights: the change sets None
    assert at.radio(key="train_weights").value == "none"
    at.radio(key="train_weights").set_value("imagenet")        # ImageNet shown -> refused, nothing queued
    at.button(key="train_launch").click().run()
    assert [e.value for e in at.error] == [REFUSED] and launched == []
    at.selectbox(key="train_model").select("vgg16").run()     # change the model: None again, and shown
    assert at.radio(key="train_weights").value == "none"
    store.set(other, status="done", finished=time.time())     # the background run ends meanwhile
    at.button(key="train_launch").click().run()                # None shown -> queued, not refused
    assert not at.error, [e.value for e in at.error]
    assert [(c.model, c.weights) for c in launched] == [("vgg16", "none")]

    at.radio(key="train_weights").set_value("imagenet")        # the reverse: ImageNet shown again -> refused
    at.button(key="train_launch").click().run()
    assert [e.value for e in at.error] == [REFUSED.replace("ResNet-18", "VGG-16")] and len(launched) == 1
