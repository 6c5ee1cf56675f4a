"""Suite-wide pytest hooks, and the session fixtures that several test modules share."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

# Nothing is downloaded: every Hugging Face model and tokenizer of the tests is built here.
os.environ["HF_HUB_OFFLINE"] = "1"

# One persistent JAX compilation cache for the session, in this process and (through the
# environment, read when jax is imported) in every T5X subprocess: the suite compiles the same
# tiny model's train, eval and decode steps in many processes, and a compiled program from the
# cache is the one a fresh compile gives. Every program is kept, however small or quick to
# compile. A cache dir set by the caller is used as it is. (Set before any test module imports jax.)
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE_DIR = tempfile.mkdtemp(prefix="suite_jax_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE_DIR
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
else:
    _JAX_CACHE_DIR = None


def pytest_unconfigure(config):
    if _JAX_CACHE_DIR is not None:
        shutil.rmtree(_JAX_CACHE_DIR, ignore_errors=True)


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
# Session fixtures shared by the Hugging Face, embedding and training tests: one Beam job over the
# bundled sample, one real t5x.train run (5 steps) that starts from a Hugging Face T5 built here,
# and the shrunk demo run (t5x.train, then t5x.eval and t5x.infer on its checkpoint). The
# subprocesses start, one after the other, in the background before the session's first test
# (where any test needs them), so that they run while the test modules before their users do.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_FASTA = os.path.join(REPO_ROOT, "tests", "data", "uniref50_sample.fasta.gz")
CONTINUED_STEPS = 5
SUBPROCESS_TIMEOUT_S = 600


def _log_tail(log_path):
    with open(log_path) as log:
        return "".join(log.readlines()[-40:])


class BackgroundModules:
    """Runs `python ARGS` commands [(args, log path)] in the repository root one after the
    other in a thread, each once the one before it has exited 0. `wait(i)` waits for command i
    and fails the test with the end of its log if it did not exit 0; `stop()` kills what runs."""

    def __init__(self, commands):
        self._commands = list(commands)
        self._status = [None] * len(self._commands)
        self._done = [threading.Event() for _ in self._commands]
        self._lock = threading.Lock()
        self._process = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        for index, (args, log_path) in enumerate(self._commands):
            with self._lock:
                if self._stopped:
                    break
                with open(log_path, "w") as log:
                    self._process = subprocess.Popen(
                        [sys.executable] + args, cwd=REPO_ROOT, stdout=log,
                        stderr=subprocess.STDOUT)
            try:
                status = self._process.wait(timeout=SUBPROCESS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
                status = "timeout"
            self._status[index] = status
            self._done[index].set()
            if status != 0:
                break
        for done in self._done:  # those not run
            done.set()

    def wait(self, index):
        self._done[index].wait()
        args, log_path = self._commands[index]
        status = self._status[index]
        if status is None:
            pytest.fail("%s did not run: a command before it failed or was stopped" % args)
        if status != 0:
            pytest.fail("%s exited with %s; end of %s:\n%s" % (args, status, log_path,
                                                               _log_tail(log_path)))

    def stop(self):
        with self._lock:
            self._stopped = True
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
        self._thread.join()


def _sample_job_command(output):
    return (["-m", "pipelines.uniref", "--input=" + SAMPLE_FASTA, "--output_dir=%s" % output,
             "--release=sample", "--overwrite", "--validation_fraction=0.1",
             "--num_train_shards=2", "--num_validation_shards=1"], str(output) + ".log")


def _continued_run_command(hf_dir, data_dir, root):
    """Imports `hf_dir` under `root` (in this process) and returns the t5x.train command that
    continues from it, with the `continued_run` figures it will give."""
    imported, model_dir = str(root / "imported"), str(root / "model")
    from models import import_hf
    import_hf.main(["--hf_dir=" + hf_dir, "--output_dir=" + imported])
    train_log = str(root / "train.log")
    command = (["-m", "t5x.train", "--gin_file=gin/runs/demo_cpu.gin",
                "--gin_file=gin/runs/from_checkpoint.gin",
                "--gin.INITIAL_CHECKPOINT_PATH='%s'" % os.path.join(imported, "checkpoint_0"),
                "--gin.MODEL_DIR='%s'" % model_dir, "--gin.DATA_DIR='%s'" % data_dir,
                "--gin.TRAIN_STEPS=%d" % CONTINUED_STEPS, "--gin.BATCH_SIZE=4",
                "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}",
                "--gin.utils.SaveCheckpointConfig.period=%d" % CONTINUED_STEPS,
                "--gin.train.train_eval_dataset_cfg=None",
                "--gin.train.run_eval_before_training=False"], train_log)
    return command, {"imported": imported, "model_dir": model_dir, "train_log": train_log,
                     "checkpoint": os.path.join(model_dir, "checkpoint_%d" % CONTINUED_STEPS),
                     "data_dir": data_dir}


# The demo run config (gin/runs/demo_cpu.gin), shrunk to seconds of training: batch 4, 32-token
# features, a checkpoint every DEMO_CHECKPOINT_PERIOD steps, and no evaluation during training
# (compiling it would double the time; `make demo` shows it).
DEMO_STEPS = 10
DEMO_CHECKPOINT_PERIOD = 2
DEMO_FEATURE_LENGTHS = "{'inputs': 32, 'targets': 32}"


def demo_train_args(model_dir, data_dir, steps):
    """`python` args of the README's t5x.train command for the shrunk demo run."""
    return ["-m", "t5x.train", "--gin_file=gin/runs/demo_cpu.gin",
            "--gin.MODEL_DIR='%s'" % model_dir, "--gin.DATA_DIR='%s'" % data_dir,
            "--gin.TRAIN_STEPS=%d" % steps, "--gin.BATCH_SIZE=4",
            "--gin.TASK_FEATURE_LENGTHS=" + DEMO_FEATURE_LENGTHS,
            "--gin.utils.SaveCheckpointConfig.period=%d" % DEMO_CHECKPOINT_PERIOD,
            "--gin.train.train_eval_dataset_cfg=None",
            "--gin.train.run_eval_before_training=False"]


def _demo_run_commands(data_dir, root):
    """The shrunk demo run of DEMO_STEPS steps, then the README's t5x.eval and t5x.infer
    commands on its last checkpoint (prompts written here by scripts.write_prompts), outputs
    under `root`: the commands, and the `demo_run` figures they will give."""
    from scripts import write_prompts
    model_dir, prompts = str(root / "full"), str(root / "prompts.tfrecord")
    write_prompts.main(["--output=" + prompts, "--prefix=MKAYVL", "--masked=M_AY_LI_SRG_"])
    checkpoint = os.path.join(model_dir, "checkpoint_%d" % DEMO_STEPS)
    commands = [
        (demo_train_args(model_dir, data_dir, DEMO_STEPS), str(root / "full.log")),
        (["-m", "t5x.eval", "--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/eval.gin",
          "--gin.CHECKPOINT_PATH='%s'" % checkpoint,
          "--gin.EVAL_OUTPUT_DIR='%s'" % (root / "eval"), "--gin.DATA_DIR='%s'" % data_dir,
          "--gin.TASK_FEATURE_LENGTHS=" + DEMO_FEATURE_LENGTHS,
          "--gin.Evaluator.num_examples=16"], str(root / "eval.log")),
        (["-m", "t5x.infer", "--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/infer.gin",
          "--gin.CHECKPOINT_PATH='%s'" % checkpoint,
          "--gin.INFER_OUTPUT_DIR='%s'" % (root / "infer"),
          "--gin.TF_EXAMPLE_FILE_PATHS=['%s']" % prompts,
          "--gin.FEATURE_LENGTHS=" + DEMO_FEATURE_LENGTHS], str(root / "infer.log")),
    ]
    return commands, {"model_dir": model_dir, "checkpoint": checkpoint, "root": root,
                      "steps": DEMO_STEPS, "checkpoint_period": DEMO_CHECKPOINT_PERIOD,
                      "train_args": demo_train_args}


def _needed_fixtures(session):
    return set().union(*(item.fixturenames for item in session.items))


@pytest.fixture(scope="session")
def background_runs(request, tmp_path_factory):
    """The sample's Beam job; where a test of the session needs `continued_run` (and t5x and
    torch are installed), its t5x.train run; where one needs `demo_run` (and t5x is installed),
    the demo run's t5x.train, t5x.eval and t5x.infer; all started one after the other in the
    background: the sample's output dir, the continued and demo runs' figures (or None), and
    the `BackgroundModules` with the index of each run's first command."""
    sample = tmp_path_factory.mktemp("sample_data")
    commands, continued, demo, first = [_sample_job_command(sample)], None, None, {}
    needed, has_t5x = _needed_fixtures(request.session), importlib.util.find_spec("t5x")
    if ("continued_run" in needed and has_t5x is not None
            and importlib.util.find_spec("torch") is not None):
        command, continued = _continued_run_command(
            request.getfixturevalue("hf_tiny_t5"), str(sample),
            tmp_path_factory.mktemp("continued"))
        first["continued"] = len(commands)
        commands.append(command)
    if "demo_run" in needed and has_t5x is not None:
        demo_commands, demo = _demo_run_commands(str(sample), tmp_path_factory.mktemp("demo"))
        first["demo"] = len(commands)
        commands += demo_commands
    releases, partitioned = {}, None
    if "rehearsal_releases" in needed:
        first["releases"] = len(commands)
        for num_shards in (MORE_SHARDS, FEWER_SHARDS):
            releases[num_shards] = str(tmp_path_factory.mktemp("uniref_%d_shards" % num_shards))
            commands.append((["-c", WRITE_RELEASE, releases[num_shards], str(num_shards)],
                             releases[num_shards] + ".log"))
    if "partitioned_training" in needed and has_t5x is not None:
        partitioned = _partitioned_training_command(releases[MORE_SHARDS],
                                                    tmp_path_factory.mktemp("partitioned"))
        first["partitioned"] = len(commands)
        commands.append(partitioned["command"])
    modules = BackgroundModules(commands)
    yield {"sample": str(sample), "continued": continued, "demo": demo, "releases": releases,
           "partitioned": partitioned, "first": first, "modules": modules}
    modules.stop()


@pytest.fixture(scope="session", autouse=True)
def start_background_runs(request):
    """Starts `background_runs` before the session's first test where any test needs the
    sample's data or the rehearsal's releases."""
    if {"sample_data_dir", "rehearsal_releases"} & _needed_fixtures(request.session):
        request.getfixturevalue("background_runs")


@pytest.fixture(scope="session")
def sample_data_dir(background_runs):
    """The data pipeline's output for the bundled UniRef50 sample."""
    background_runs["modules"].wait(0)
    return background_runs["sample"]


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
def continued_run(hf_tiny_t5, sample_data_dir, background_runs):
    """`models.import_hf` of `hf_tiny_t5`, then CONTINUED_STEPS steps of the demo run config
    started from it (gin/runs/from_checkpoint.gin): the suite's trained tiny model."""
    pytest.importorskip("t5x", reason="t5x not installed")
    # `background_runs` started it: this fixture is among the session's needed ones.
    background_runs["modules"].wait(background_runs["first"]["continued"])
    return background_runs["continued"]


@pytest.fixture(scope="session")
def demo_run(sample_data_dir, background_runs):
    """The shrunk demo run (DEMO_STEPS steps of gin/runs/demo_cpu.gin on the sample's data),
    run in the background after the suite's other T5X run: its model dir, last checkpoint,
    steps and checkpoint period, `demo_train_args`, and (once `wait_eval_and_infer()` has
    returned) the README's t5x.eval and t5x.infer outputs on that checkpoint under root/eval
    and root/infer."""
    pytest.importorskip("t5x", reason="t5x not installed")
    modules, first = background_runs["modules"], background_runs["first"]["demo"]
    modules.wait(first)

    def wait_eval_and_infer():
        modules.wait(first + 1)
        modules.wait(first + 2)

    return dict(background_runs["demo"], data_dir=sample_data_dir,
                wait_eval_and_infer=wait_eval_and_infer)


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


# ---------------------------------------------------------------------------------------------
# Session fixtures shared by the task and TPU-rehearsal tests: the rehearsal's two releases of
# the bundled sample and its partitioned training on simulated devices (both in the background
# queue above, after the T5X runs), and one seqio cache (a Beam job) of one of the releases.
MORE_SHARDS, FEWER_SHARDS = 8, 2  # train shards, than the rehearsal's 4 simulated hosts
WRITE_RELEASE = ("import sys\nfrom scripts import rehearse\n"
                 "rehearse.write_release(sys.argv[1], int(sys.argv[2]))")


def _partitioned_training_command(data_dir, root):
    """`scripts.rehearse_partitioned_training` on `data_dir` (it sets XLA_FLAGS for 8 jax
    devices before jax starts), outputs under `root`: the command, its log and JSON report."""
    report, log = str(root / "report.json"), str(root / "log")
    command = ["-m", "scripts.rehearse_partitioned_training", "--data_dir=" + data_dir,
               "--work_dir=%s" % (root / "runs"), "--json=" + report, "--num_devices=8",
               "--steps=4", "--checkpoint_step=2"]
    return {"command": (command, log), "log": log, "report": report}


@pytest.fixture(scope="session")
def rehearsal_releases(background_runs):
    """`scripts.rehearse.write_release` of the bundled sample (the UniRef job and cluster
    shards) with MORE_SHARDS and FEWER_SHARDS train shards: {train shards: (data dir,
    manifest)}."""
    first = background_runs["first"]["releases"]
    releases = {}
    for index, num_shards in enumerate((MORE_SHARDS, FEWER_SHARDS)):
        background_runs["modules"].wait(first + index)
        data_dir = background_runs["releases"][num_shards]
        with open(os.path.join(data_dir, "manifest.json")) as f:
            releases[num_shards] = (data_dir, json.load(f))
    return releases


@pytest.fixture(scope="session")
def partitioned_training(rehearsal_releases, background_runs):
    """`scripts.rehearse_partitioned_training` on the MORE_SHARDS release (8 simulated
    devices, 4 steps, checkpoint at 2), finished: its log (stdout and stderr) and JSON
    report."""
    pytest.importorskip("t5x", reason="t5x not installed")
    background_runs["modules"].wait(background_runs["first"]["partitioned"])
    return background_runs["partitioned"]


@pytest.fixture(scope="session")
def seqio_cache(rehearsal_releases, tmp_path_factory):
    """`tasks.cache_tasks` (seqio's Beam cache job, DirectRunner) of the p=0.15 denoising and
    the completion task of the MORE_SHARDS release, with --min_shards=4: its cache dir, the
    release's data dir, and seqio's global cache dirs as the job left them. Those are put back
    as they were before the job, so that a test finds this cache only where it adds it."""
    import gin
    import seqio
    from tasks import cache_tasks
    data_dir = rehearsal_releases[MORE_SHARDS][0]
    cache_dir = str(tmp_path_factory.mktemp("seqio_cache"))
    before = list(seqio.utils.get_global_cache_dirs())
    cache_tasks.run([
        "--gin_bindings=import tasks.mixtures",
        "--gin_bindings=ankh3_pretrain_mixture.data_dir = %r" % data_dir,
        "--gin_bindings=ankh3_pretrain_mixture.mask_probabilities = (0.15,)",
        "--output_cache_dir=" + cache_dir, "--min_shards=4",
        "--pipeline_options=--runner=DirectRunner",
    ])
    after = list(seqio.utils.get_global_cache_dirs())
    seqio.set_global_cache_dirs(before)
    gin.clear_config()  # the job's bindings (mask_probabilities) would change later mixtures
    return {"dir": cache_dir, "data_dir": data_dir, "global_cache_dirs_after_run": after}
