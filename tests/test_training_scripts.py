"""The main job's helper scripts: prompts for t5x.infer (scripts/write_prompts.py) and loss curves
from TensorBoard event files (scripts/loss_curves.py). No T5X needed."""
import gzip
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from scripts import loss_curves
from scripts import write_prompts
from tasks import vocabulary

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_completion_prompt_is_the_s2s_prefix_and_the_residues():
    assert write_prompts.completion_prompt(" mkayvl ") == "[S2S]MKAYVL"


def test_masked_prompt_numbers_sentinels_in_order_as_the_ankh3_card():
    prompt = write_prompts.masked_prompt("M_AY_LI_SRG_")
    # ankh3-large model card: MKAYVLINSRGP -> M <extra_id_0> A Y <extra_id_1> L I <extra_id_2> S R G <extra_id_3>
    assert prompt == "[NLU]M<extra_id_0>AY<extra_id_1>LI<extra_id_2>SRG<extra_id_3>"
    ids = list(vocabulary.ProteinVocabulary().encode(prompt))
    nlu, m, a, y, l, i, s, r, g = 3, 24, 8, 22, 7, 15, 10, 13, 9
    assert ids == [nlu, m, 255, a, y, 254, l, i, 253, s, r, g, 252]


@pytest.mark.parametrize("make, text, message", [
    (write_prompts.completion_prompt, "MK1", "--prefix='MK1'"),
    (write_prompts.completion_prompt, "", "--prefix=''"),
    (write_prompts.completion_prompt, "MK_A", "--prefix='MK_A'"),
    (write_prompts.masked_prompt, "MKAY", "mark at least one residue"),
    (write_prompts.masked_prompt, "M_K*", "--masked='M_K*'"),
])
def test_bad_prompts_are_refused_with_the_flag_named(make, text, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("'", ".")):
        make(text)


def test_too_many_masked_residues_for_the_sentinels_are_refused():
    with pytest.raises(ValueError, match="224 sentinels"):
        write_prompts.masked_prompt("_" * (vocabulary.NUM_SENTINELS + 1))


def test_write_prompts_writes_one_example_per_prompt_in_order(tmp_path, capsys):
    output = tmp_path / "prompts.tfrecord"
    write_prompts.main(["--output=%s" % output, "--prefix=MKAY", "--masked=M_A", "--prefix=GG"])
    records = [tf.train.Example.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(str(output))]
    texts = [r.features.feature["inputs"].bytes_list.value[0].decode() for r in records]
    assert texts == ["[S2S]MKAY", "[S2S]GG", "[NLU]M<extra_id_0>A"]
    assert capsys.readouterr().out.split() == texts
    assert sorted(os.listdir(tmp_path)) == ["prompts.tfrecord"]


def _write_scalars(log_dir, tag, values):
    """One event file in `log_dir` with `tag` at the given {step: value}, as t5x's writer does."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for step, value in values.items():
            tf.summary.scalar(tag, value, step=step)
    writer.close()


def test_restarted_run_later_event_file_wins_for_overlapping_steps(tmp_path):
    train = tmp_path / "model" / "train"
    # A run killed after step 5 (checkpoint at 4), then restarted from step 4.
    _write_scalars(train, loss_curves.LOSS_TAG, {1: 6.0, 2: 5.0, 3: 4.0, 4: 3.5, 5: 9.9})
    _write_scalars(train, loss_curves.LOSS_TAG, {5: 3.0, 6: 2.5})
    runs = loss_curves.read_scalar_runs(str(train), loss_curves.LOSS_TAG)
    assert [sorted(r) for r in runs] == [[1, 2, 3, 4, 5], [5, 6]]
    curve = loss_curves.read_scalar(str(train), loss_curves.LOSS_TAG)
    assert curve == loss_curves.Curve(steps=[1, 2, 3, 4, 5, 6],
                                      values=pytest.approx([6.0, 5.0, 4.0, 3.5, 3.0, 2.5]))


def test_write_loss_curves_reads_train_and_every_task_and_writes_png_and_summary(tmp_path):
    model_dir = tmp_path / "model"
    _write_scalars(model_dir / "train", loss_curves.LOSS_TAG, {1: 6.0, 2: 4.0, 3: 3.0})
    for task, (first, last) in {"task_a": (6.1, 2.0), "task_b": (6.2, 3.0)}.items():
        log_dir = model_dir / "training_eval" / task
        _write_scalars(log_dir, loss_curves.LOSS_TAG, {0: first, 3: last})
        _write_scalars(log_dir, loss_curves.ACCURACY_TAG, {0: 0.0, 3: 0.5})
    summary = loss_curves.write_loss_curves(str(model_dir))
    assert (tmp_path / "loss_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((tmp_path / "loss_summary.json").read_text()) == summary
    expected = {"train": (6.0, 3.0, 1, 3), "task_a": (6.1, 2.0, 0, 3), "task_b": (6.2, 3.0, 0, 3)}
    assert set(summary["loss"]) == set(expected)
    for name, (first, last, first_step, last_step) in expected.items():
        row = summary["loss"][name]
        assert (row["first_step"], row["last_step"]) == (first_step, last_step)
        assert (row["first"], row["last"]) == pytest.approx((first, last))
    assert set(summary["accuracy"]) == {"task_a", "task_b"}
    assert "profile_kl_per_residue" not in summary


def test_loss_curves_of_a_profile_run_show_the_profile_kl(tmp_path):
    model_dir = tmp_path / "model"
    _write_scalars(model_dir / "train", loss_curves.LOSS_TAG, {1: 6.0, 2: 4.0})
    _write_scalars(model_dir / "train", loss_curves.PROFILE_KL_TAG, {1: 2.5, 2: 2.0})
    for task, kl in {"ankh3_profile_joint": 1.5, "ankh3_complete": 0.0}.items():
        log_dir = model_dir / "training_eval" / task
        _write_scalars(log_dir, loss_curves.LOSS_TAG, {2: 3.0})
        _write_scalars(log_dir, loss_curves.PROFILE_KL_TAG, {2: kl})
        _write_scalars(log_dir, loss_curves.PROFILE_AGREEMENT_TAG, {2: 0.25 if kl else 0.0})
    summary = loss_curves.write_loss_curves(str(model_dir))
    assert (tmp_path / "loss_curves.png").read_bytes()[:8] == PNG_MAGIC
    # Tasks without profiles (zeros) are left out.
    assert set(summary["profile_kl_per_residue"]) == {"train", "ankh3_profile_joint"}
    assert summary["profile_kl_per_residue"]["ankh3_profile_joint"]["last"] == 1.5
    assert summary["profile_argmax_agreement"]["ankh3_profile_joint"]["last"] == 0.25


def test_write_loss_curves_refuses_a_directory_without_training_summaries(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError, match="loss_per_nonpadding_target_token"):
        loss_curves.write_loss_curves(str(tmp_path / "model"))
    assert not (tmp_path / "loss_curves.png").exists()


def test_main_job_without_t5x_preprocesses_then_stops_at_training_saying_how_to_install(tmp_path):
    # A `t5x` that cannot be imported, first on the path (as on a machine without T5X).
    blocker = tmp_path / "no_t5x"
    blocker.mkdir()
    (blocker / "t5x.py").write_text(
        'raise ModuleNotFoundError("No module named \'t5x\'", name="t5x")\n')
    fasta = tmp_path / "sample.fasta"
    with gzip.open(os.path.join(REPO_ROOT, "tests", "data", "uniref50_sample.fasta.gz"), "rt") as f:
        records = f.read().split(">")[1:13]
    fasta.write_text("".join(">" + record for record in records))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, SAMPLE=str(fasta), OUT=str(out),
               PYTHONPATH=os.pathsep.join([str(blocker), REPO_ROOT]))
    result = subprocess.run(["bash", "scripts/run_sample.sh"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No module named 't5x'" in result.stderr
    assert "pip install --no-deps -r requirements-t5x.txt" in result.stderr
    # Step 1 ran to completion; nothing of training was started.
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["counts"]["records_read"] == 12
    assert not (out / "model").exists()
