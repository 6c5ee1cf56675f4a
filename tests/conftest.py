"""Suite-wide pytest hooks, and the session fixtures that several test modules share."""
import importlib.util
import os
import subprocess
import sys

import pytest

# Nothing is downloaded: every Hugging Face model and tokenizer of the tests is built here.
os.environ["HF_HUB_OFFLINE"] = "1"


def pytest_terminal_summary(terminalreporter):
    """States whether the tests that need T5X ran, since they skip where t5x is not installed."""
    skipped = terminalreporter.stats.get("skipped", [])
    t5x_skips = [report for report in skipped if "t5x" in str(report.longrepr).lower()]
    if importlib.util.find_spec("t5x") is not None:
        line = "T5X is installed: the T5X tests ran (%d skipped for t5x)." % len(t5x_skips)
    else:
        line = ("T5X is not installed: %d test modules or tests that need it were skipped "
                "(pip install --no-deps -r requirements-t5x.txt)." % len(t5x_skips))
    terminalreporter.write_line(line)


# ---------------------------------------------------------------------------------------------
# Session fixtures shared by the Hugging Face and embedding tests: one Beam job over the bundled
# sample, and one real t5x.train run (5 steps) that starts from a Hugging Face T5 built here.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_FASTA = os.path.join(REPO_ROOT, "tests", "data", "uniref50_sample.fasta.gz")
CONTINUED_STEPS = 5
SUBPROCESS_TIMEOUT_S = 600


def run_module(args, log_path):
    """Runs `python -m ARGS` in the repository root; fails the test with the log's end if it
    does not exit 0."""
    with open(log_path, "w") as log:
        process = subprocess.run([sys.executable, "-m"] + args, cwd=REPO_ROOT, stdout=log,
                                 stderr=subprocess.STDOUT, timeout=SUBPROCESS_TIMEOUT_S)
    if process.returncode != 0:
        with open(log_path) as log:
            tail = "".join(log.readlines()[-40:])
        pytest.fail("%s exited with %s; end of %s:\n%s" % (args, process.returncode, log_path,
                                                           tail))


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory):
    """The data pipeline's output for the bundled UniRef50 sample."""
    output = tmp_path_factory.mktemp("sample_data")
    run_module(["pipelines.uniref", "--input=" + SAMPLE_FASTA, "--output_dir=%s" % output,
                "--release=sample", "--overwrite", "--validation_fraction=0.1",
                "--num_train_shards=2", "--num_validation_shards=1"], str(output) + ".log")
    return str(output)


@pytest.fixture(scope="session")
def hf_tiny_t5(tmp_path_factory):
    """A `transformers` T5 with the tiny model's Ankh3 shape (gin/models/tiny.gin: gated-SiLU,
    64 buckets / 128, 256 ids, untied head), random weights, saved by `save_pretrained`, with
    the protein tokenizer."""
    pytest.importorskip("torch", reason="torch not installed (requirements.txt)")
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_heads=4, num_layers=2,
                      num_decoder_layers=2, feed_forward_proj="gated-silu",
                      relative_attention_num_buckets=64, relative_attention_max_distance=128,
                      dropout_rate=0.0, tie_word_embeddings=False, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config)
    # transformers 5 ties lm_head to the embedding in a freshly built T5 whatever the config
    # says; Ankh's head is its own weight.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(256, 64) * 0.05)
    output = tmp_path_factory.mktemp("hf_tiny_t5")
    model.save_pretrained(str(output))
    from models import export_hf
    export_hf.protein_tokenizer().save_pretrained(str(output))
    return str(output)


@pytest.fixture(scope="session")
def continued_run(hf_tiny_t5, sample_data_dir, tmp_path_factory):
    """`models.import_hf` of `hf_tiny_t5`, then CONTINUED_STEPS steps of the demo run config
    started from it (gin/runs/from_checkpoint.gin): the suite's trained tiny model."""
    pytest.importorskip("t5x", reason="t5x not installed")
    root = tmp_path_factory.mktemp("continued")
    imported, model_dir = str(root / "imported"), str(root / "model")
    from models import import_hf
    import_hf.main(["--hf_dir=" + hf_tiny_t5, "--output_dir=" + imported])
    train_log = str(root / "train.log")
    run_module(["t5x.train", "--gin_file=gin/runs/demo_cpu.gin",
                "--gin_file=gin/runs/from_checkpoint.gin",
                "--gin.INITIAL_CHECKPOINT_PATH='%s'" % os.path.join(imported, "checkpoint_0"),
                "--gin.MODEL_DIR='%s'" % model_dir, "--gin.DATA_DIR='%s'" % sample_data_dir,
                "--gin.TRAIN_STEPS=%d" % CONTINUED_STEPS, "--gin.BATCH_SIZE=4",
                "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}",
                "--gin.utils.SaveCheckpointConfig.period=%d" % CONTINUED_STEPS,
                "--gin.train.train_eval_dataset_cfg=None",
                "--gin.train.run_eval_before_training=False"], train_log)
    return {"imported": imported, "model_dir": model_dir, "train_log": train_log,
            "checkpoint": os.path.join(model_dir, "checkpoint_%d" % CONTINUED_STEPS),
            "data_dir": sample_data_dir}


@pytest.fixture(scope="session")
def profile_model(continued_run, tmp_path_factory):
    """The suite's trained tiny model with a profile head (a seeded random kernel; no training):
    its parameters, their export by `models.export_hf` (with profile_head.safetensors), and
    that export imported back by `models.import_hf` as a profile model's checkpoint_0."""
    pytest.importorskip("torch", reason="torch not installed (requirements.txt)")
    import numpy as np
    from models import export_hf, import_hf, param_count, t5x_checkpoint

    root = tmp_path_factory.mktemp("profile_model")
    params = t5x_checkpoint.read_params(continued_run["checkpoint"])
    params["profile_head"] = {"kernel": np.random.default_rng(0).normal(
        0.0, 0.5, (64, 20)).astype(np.float32)}
    hf_dir, imported = str(root / "hf"), str(root / "imported")
    export_hf.export(param_count.network_config_from_gin("gin/models/tiny.gin"), params, hf_dir)
    import_hf.main(["--hf_dir=" + hf_dir, "--output_dir=" + imported])
    return {"params": params, "hf_dir": hf_dir, "imported": imported,
            "checkpoint": os.path.join(imported, "checkpoint_0"),
            "model_gin": os.path.join(imported, "model.gin")}
