"""Real T5X runs of the demo config (gin/runs/demo_cpu.gin), shrunk to seconds of training:
exact resume after a killed run, the loss curves of a run, `t5x.eval` per-task metrics and
`t5x.infer` on prompts. Every command is the README's, from the repository root.

The uninterrupted run of N steps, and t5x.eval and t5x.infer on its last checkpoint, run in the
background from the session's start (tests/conftest.py: `demo_run`). The resume test trains a
run that is killed (SIGKILL to its process group) once a checkpoint is on disk. That run is
started with a much larger TRAIN_STEPS, so that the kill always lands mid-run: the learning-rate
schedule does not depend on TRAIN_STEPS (its decay is a bound constant), so each of its steps
computes exactly what the uninterrupted run's does. It is then restarted in the same MODEL_DIR
with the uninterrupted run's command line, and must continue at the step after its last
checkpoint, on the same batches: per-step losses equal to the uninterrupted run's.
"""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")

from scripts import loss_curves  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_AFTER_CHECKPOINT = 4
TASKS = ("ankh3_complete", "ankh3_denoise_p10", "ankh3_denoise_p20", "ankh3_denoise_p30")
TIMEOUT_S = 600


def _start(args, log_path):
    """Starts `python ARGS` in the repository root, in its own process group, output to a log."""
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable] + args, cwd=REPO_ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _finish(process, log_path):
    """Waits for `process`; fails the test with the end of its log if it did not exit 0."""
    try:
        status = process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        status = "timeout"
    if status != 0:
        with open(log_path) as log:
            tail = "".join(log.readlines()[-40:])
        pytest.fail("%s exited with %s; end of %s:\n%s" % (process.args, status, log_path, tail))


def _checkpoint_steps(model_dir):
    """Steps of the checkpoints in `model_dir` (orbax writes a temporary name, then renames)."""
    names = [os.path.basename(p) for p in glob.glob(os.path.join(model_dir, "checkpoint_*"))]
    return sorted(int(name.split("_")[1]) for name in names
                  if re.fullmatch(r"checkpoint_\d+", name))


@pytest.fixture(scope="module")
def runs(demo_run, tmp_path_factory):
    """The uninterrupted run (tests/conftest.py: `demo_run`, trained in the background), and the
    killed-then-restarted one: their model dirs, the step of the last checkpoint the killed
    run had written, and the run's steps and checkpoint period."""
    root = tmp_path_factory.mktemp("runs")
    resumed, steps, data_dir = str(root / "resumed"), demo_run["steps"], demo_run["data_dir"]
    killed_log, resumed_log = str(root / "killed.log"), str(root / "resumed.log")
    killed_run = _start(demo_run["train_args"](resumed, data_dir, 100 * steps),
                        killed_log)
    deadline = time.time() + TIMEOUT_S
    while KILL_AFTER_CHECKPOINT not in _checkpoint_steps(resumed):
        if killed_run.poll() is not None or time.time() > deadline:
            _finish(killed_run, killed_log)
            pytest.fail("the run to kill ended or stalled before checkpoint %d"
                        % KILL_AFTER_CHECKPOINT)
        time.sleep(0.05)
    os.killpg(killed_run.pid, signal.SIGKILL)
    assert killed_run.wait(timeout=60) == -signal.SIGKILL
    checkpoints_at_kill = _checkpoint_steps(resumed)
    restarted_run = _start(demo_run["train_args"](resumed, data_dir, steps),
                           resumed_log)
    _finish(restarted_run, resumed_log)
    return {"full": demo_run["model_dir"], "resumed": resumed,
            "checkpoints_at_kill": checkpoints_at_kill, "resumed_log": resumed_log,
            "steps": steps, "checkpoint_period": demo_run["checkpoint_period"]}


def _losses(model_dir, tag="loss"):
    return loss_curves.read_scalar_runs(os.path.join(model_dir, "train"), tag)


def test_killed_run_left_only_complete_checkpoints(runs):
    steps = runs["checkpoints_at_kill"]
    last = steps[-1]
    assert KILL_AFTER_CHECKPOINT <= last < runs["steps"], steps
    assert steps == list(range(0, last + 1, runs["checkpoint_period"]))
    for step in steps:
        items = os.listdir(os.path.join(runs["resumed"], "checkpoint_%d" % step))
        assert {"state", "dataset", "_CHECKPOINT_METADATA"} <= set(items), (step, items)


def test_restart_continues_from_the_last_checkpoint_on_the_same_data(runs):
    last, total = runs["checkpoints_at_kill"][-1], runs["steps"]
    (full,) = _losses(runs["full"])
    assert sorted(full) == list(range(1, total + 1))
    before_kill, after_restart = _losses(runs["resumed"])
    # The restarted process trained exactly the steps after the last checkpoint ...
    assert sorted(after_restart) == list(range(last + 1, total + 1))
    with open(runs["resumed_log"]) as log:
        assert re.search(r"Restoring checkpoint from \S*checkpoint_%d\b" % last, log.read())
    # ... on the batches the uninterrupted run saw at those steps: same per-step losses.
    steps = sorted(after_restart)
    np.testing.assert_allclose([after_restart[s] for s in steps], [full[s] for s in steps],
                               rtol=1e-6)
    steps = sorted(before_kill)
    assert steps[:last] == list(range(1, last + 1))
    np.testing.assert_allclose([before_kill[s] for s in steps], [full[s] for s in steps],
                               rtol=1e-6)
    # Different batches give different losses: equality above is not a coincidence.
    assert len({round(v, 3) for v in full.values()}) == total


def test_loss_curves_of_a_run(demo_run, tmp_path):
    summary = loss_curves.write_loss_curves(demo_run["model_dir"], str(tmp_path))
    with open(tmp_path / "loss_curves.png", "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    train = summary["loss"]["train"]
    steps = demo_run["steps"]
    assert (train["first_step"], train["last_step"], train["points"]) == (1, steps, steps)
    # Untrained: about uniform over the 256 ids (log 256 = 5.5 nats per token).
    assert 5.0 < train["first"] < 6.5


def test_loss_curve_of_a_restarted_run_is_the_uninterrupted_runs(runs):
    full = loss_curves.read_scalar(os.path.join(runs["full"], "train"), loss_curves.LOSS_TAG)
    resumed = loss_curves.read_scalar(os.path.join(runs["resumed"], "train"),
                                      loss_curves.LOSS_TAG)
    assert resumed.steps == full.steps == list(range(1, runs["steps"] + 1))
    np.testing.assert_allclose(resumed.values, full.values, rtol=1e-6)


@pytest.fixture(scope="module")
def eval_and_infer(demo_run):
    """The README's t5x.eval and t5x.infer commands on the last checkpoint of the uninterrupted
    run (tests/conftest.py: `demo_run`, run in the background), finished: their output root and
    the run's steps."""
    demo_run["wait_eval_and_infer"]()
    return demo_run["root"], demo_run["steps"]


def test_eval_reports_each_tasks_metric(eval_and_infer):
    root, steps = eval_and_infer
    expected = {"ankh3_complete": "continuation_residue_accuracy"}
    expected.update({task: "masked_residue_accuracy" for task in TASKS[1:]})
    for task, metric in expected.items():
        with open(root / "eval" / "inference_eval" / ("%s-metrics.jsonl" % task)) as f:
            (line,) = f.read().splitlines()
        record = json.loads(line)
        assert record["step"] == steps
        assert 0.0 <= record[metric] <= 100.0, record


def test_infer_generates_a_completion_and_masked_residues(eval_and_infer):
    root, _ = eval_and_infer
    (path,) = glob.glob(str(root / "infer" / "*-predict.jsonl-00000-of-00001"))
    with open(path) as f:
        lines = [json.loads(line) for line in f.read().splitlines()]
    assert [line["inputs"]["inputs_pretokenized"] for line in lines] == [
        "[S2S]MKAYVL", "[NLU]M<extra_id_0>AY<extra_id_1>LI<extra_id_2>SRG<extra_id_3>"]
    for line in lines:
        prediction = line["prediction"]
        assert prediction, line
        # Decoded ids only: residues, sentinels, prefixes and <unk>.
        assert re.fullmatch(r"([A-Z]|<extra_id_\d+>|\[NLU\]|\[S2S\]|<unk>)+", prediction), line
