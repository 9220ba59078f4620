"""The live progress line: phase and a steady ETA that counts validation and the final evaluation,
computed once where a run's progress is written (core.runs.eta in the store's sink)."""
import numpy as np

from conftest import tiny_config
from core.runs.eta import phase_and_eta, step_rate

CFG = {"epochs": 3, "batch_size": 32, "val": 0.2, "holdout": 0.01}


def test_rate_ignores_a_slow_start_once_a_minute_of_steps_is_there():
    # 10 slow warm-up steps (2 s each), then 70 s of steps at 10 steps/s
    t = list(np.concatenate([np.arange(10) * 2.0, 20 + np.arange(1, 701) * 0.1]))
    assert abs(step_rate(t) - 10) < 0.1
    assert step_rate([0.0, 1.0]) is None


def test_eta_counts_remaining_steps_validation_and_the_final_evaluation():
    t = list(np.arange(1, 101) * 0.1)                               # 10 steps/s = 320 images/s
    p = {"epoch": 1, "epochs": 3, "step_in_epoch": 50, "steps_per_epoch": 100, "images_per_s": 5.0}
    phase, eta = phase_and_eta(p, t, CFG)
    assert phase == "epoch 1/3 · step 50/100"
    train_left = 250 / 10
    val_images = 3200 * 0.2 / 0.8
    per_val = val_images / 3 / 320
    final = (3200 + val_images) / 0.99 / 3 / 320
    assert abs(eta - (train_left + 3 * per_val + final)) < 1e-6
    assert eta > train_left                                         # evaluation is counted, not "ETA 0s"


def test_after_the_last_step_it_says_it_is_evaluating():
    p = {"epoch": 3, "epochs": 3, "step_in_epoch": 100, "steps_per_epoch": 100}
    phase, eta = phase_and_eta(p, list(np.arange(1, 101) * 0.1), CFG)
    assert phase == "evaluating train, validation and holdout…" and eta > 0
    phase, _ = phase_and_eta({**p, "epoch": 2}, list(np.arange(1, 101) * 0.1), CFG)
    assert phase == "validating epoch 2/3…"


def test_no_rate_yet_gives_no_eta_rather_than_a_wild_one():
    p = {"epoch": 1, "epochs": 3, "step_in_epoch": 1, "steps_per_epoch": 100}
    assert phase_and_eta(p, [0.0], CFG)[1] is None


def test_the_store_sink_writes_the_phase_and_eta_into_the_jobs_progress(demo_root):
    from core.runs.jobs import Context
    from core.runs.store import RunStore
    from core.runs.tasks import StoreSink
    store = RunStore()
    run_id = store.create(tiny_config(demo_root, epochs=2))
    sink = StoreSink(Context(store, store.job(run_id)), flush_s=0)
    for s in range(5):
        sink.emit("step", {"step": s, "epoch": 1, "loss": 1.0, "acc": 0.5, "lr": 0.1,
                           "progress": {"epoch": 1, "epochs": 2, "step_in_epoch": s + 1, "steps_per_epoch": 10,
                                        "images_per_s": 64.0}})
    p = store.job(run_id)["progress"]
    assert p["phase"] == "epoch 1/2 · step 5/10" and p["eta_s"] > 0
