"""The CLI runs long work through the same job kinds as the dashboard (issue 18): in its own
process, recorded as a job, with the kind's checks and its one-sentence failures."""
import json

from core.cli import main
from core.runs.store import RunStore


def test_demo_data_runs_as_a_demo_job_and_prints_the_same_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo-data", str(out), "--classes", "3", "--images", "30", "--size", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["classes"] == 3 and info["images"] == 30 and sum(info["counts"].values()) == 30
    jobs = RunStore().jobs(kind="demo")
    assert len(jobs) == 1 and jobs[0]["status"] == "done" and jobs[0]["result"]["out"] == str(out.resolve())


def test_class_model_runs_as_a_class_models_job_into_out(use_trained_home, tmp_path, capsys):
    _, (run_id, _) = use_trained_home
    assert main(["class-model", "--run", run_id, "--class", "0", "--out", str(tmp_path / "cm"), "--steps", "2",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["run_id"] == run_id and (tmp_path / "cm").is_dir() and r["png"].startswith(str(tmp_path / "cm"))
    job = RunStore().jobs(kind="class_models")[0]
    assert job["status"] == "done" and job["run_id"] == run_id and job["job_id"] != run_id
    assert main(["class-model", "--run", "nope", "--class", "0", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == f"error: There is no run 'nope' in {RunStore().root}."
