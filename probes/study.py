"""The miniature Ankh3 study: does multi-task pretraining give better frozen embeddings?

    python -m probes.study --output_dir=out/study [--stages=data,corpus,train,eval,probe,report]

Stages (each skips what is already complete in OUTPUT_DIR, so a rerun resumes):
  data    probe sets from the installed wheels (`python -m probes.prepare`) -> probe_data/
  corpus  the UniRef job on the 20,000 real UniProtKB entries of Debian's mmseqs2-examples,
          decontaminated against the probe test sets (--benchmark_fasta) -> corpus/
  profiles  the profiles job in search mode on the corpus's train sequences: each one's MSA of
          hits among the train sequences (MMseqs2), its HMM and per-residue targets, for the
          arms that train on profiles -> profiles/ (only train sequences, so no arm ever sees
          a held-out corpus sequence)
  train   every arm of ARMS with `t5x.train --gin_file=gin/runs/study_cpu.gin` + the arm's
          overrides, the same steps, batch, feature lengths and seeds, all arms at once,
          progress in logs/train_<arm>.log -> models/<arm>/
  eval    held-out masked-residue accuracy of each arm's checkpoint at the study step, on the
          [NLU] task at 20 % for every arm: teacher-forced (`python -m probes.masked_lm`, on
          TEACHER_FORCED_EXAMPLES held-out corpus sequences) and by greedy decoding (`t5x.eval`
          with gin/runs/eval.gin + mlm_only.gin + single_mask_probability.gin, on EVAL_EXAMPLES)
  probe   the probe harness (`python -m probes.run`) on each arm's checkpoint; the random-weights
          network and the one-hot baselines come with the first arm's run -> probes/<arm>/
  report  study.json and study.png: every arm x probe with its 95 % interval

An arm is a name and the arguments it adds to the shared t5x.train command line (`--gin_file=`
ablation files or `--gin.` bindings); add one to ARMS to extend the study.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

from pipelines import tfrecords
from probes import data
from probes import linear
from probes import report
from tasks import metrics as metrics_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_FASTA = "/usr/share/doc/mmseqs2/example-data/DB.fasta.gz"
RUN_GIN = "gin/runs/study_cpu.gin"
MODEL_GIN = "gin/models/small.gin"
FEATURE_LENGTHS = "{'inputs': 128, 'targets': 128}"
WARMUP_STEPS = 100  # gin/runs/study_cpu.gin
EVAL_EXAMPLES = 128
# The teacher-forced masked-residue accuracy (probes/masked_lm.py), on more examples: it is cheap.
TEACHER_FORCED = "teacher_forced_p20"
TEACHER_FORCED_FILE = "teacher_forced_p20.json"
TEACHER_FORCED_EXAMPLES = 512
# Subsets of the probe sets (the first N, in hash order) that embed in minutes on 2 shared cores.
PROBE_LIMITS = {"ss_train": 500, "ss_test": 300, "gb1_train": 1000, "gb1_test": 500}
STAGES = ("data", "corpus", "profiles", "train", "eval", "probe", "report")

# (name, t5x.train arguments added to the shared command line; `{profiles}` stands for the
# profiles stage's output). Same steps, batch, feature lengths and seeds for all: only the
# objective differs.
ARMS = [
    ("ankh3", []),  # the Ankh3 mixture: [NLU] at 10/20/30 % and [S2S] completion, 50/50
    ("mlm_p20", ["--gin_file=gin/ablations/mlm_only.gin",
                 "--gin_file=gin/ablations/single_mask_probability.gin"]),  # Ankh's 20 % only
    ("mlm_multi", ["--gin_file=gin/ablations/mlm_only.gin"]),  # [NLU] at 10/20/30 % only
    # The Ankh3 mixture (75 %) + the joint profile task (25 %: [NLU] masked at 15 %, profile
    # targets at every residue), on the profile model (head + KL loss).
    ("ankh3_profile", ["--gin_file=gin/runs/profile_mixture.gin",
                       "--gin.PROFILE_DATA_DIR='{profiles}'"]),
]
# Arms that train on profiles. Their profiles: the first PROFILE_QUERIES train sequences (in the
# corpus's shuffled order), each searched against all train sequences, up to PROFILE_MAX_HITS
# hits per MSA (what fits the study's CPU time: ~0.25 core-seconds per query here).
PROFILE_ARMS = ("ankh3_profile",)
PROFILE_QUERIES = 1000
PROFILE_MAX_HITS = 100


def log(message):
    print("[study %s] %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def _run(args, log_path):
    log("$ %s  (log: %s)" % (" ".join(args), log_path))
    with open(log_path, "w") as f:
        status = subprocess.call(args, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT)
    if status != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-30:])
        raise SystemExit("failed (exit %d): %s\n%s" % (status, " ".join(args), tail))


def checkpoint_steps(model_dir):
    steps = []
    for path in glob.glob(os.path.join(model_dir, "checkpoint_*")):
        match = re.fullmatch(r"checkpoint_(\d+)", os.path.basename(path))
        if match and os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA")):
            steps.append(int(match.group(1)))
    return sorted(steps)


def train_args(arm_args, model_dir, data_dir, profile_dir, steps):
    arm_args = [arg.format(profiles=profile_dir) for arg in arm_args]
    return [sys.executable, "-m", "t5x.train", "--gin_file=" + RUN_GIN] + arm_args + [
        "--gin.MODEL_DIR='%s'" % model_dir, "--gin.DATA_DIR='%s'" % data_dir,
        "--gin.TRAIN_STEPS=%d" % steps,
        "--gin.utils.create_learning_rate_scheduler.decay_factor=%r"
        % (1.0 / (steps - WARMUP_STEPS))]


def train(out, arms, steps, nice):
    """Starts every arm that has no checkpoint at `steps`, all at once, and waits; logs the step
    each has reached every minute."""
    processes = {}
    # One compute thread per arm: XLA's CPU thread pool waits for all its threads at every op,
    # so arms running at once (or with other jobs) on few cores stall each other when each
    # has a pool; single-threaded, they share the cores without stalls.
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                                      + " --xla_cpu_multi_thread_eigen=false").strip())
    for name, arm_args in arms:
        model_dir = os.path.join(out, "models", name)
        if steps in checkpoint_steps(model_dir):
            continue
        command = (["nice", "-n", str(nice)] if nice else []) + train_args(
            arm_args, model_dir, os.path.join(out, "corpus"), os.path.join(out, "profiles"), steps)
        log_path = os.path.join(out, "logs", "train_%s.log" % name)
        log("$ %s  (log: %s)" % (" ".join(command), log_path))
        with open(log_path, "a") as f:
            processes[name] = (subprocess.Popen(command, cwd=REPO_ROOT, stdout=f,
                                                stderr=subprocess.STDOUT, env=env), log_path)
    while processes:
        time.sleep(60)
        for name, (process, log_path) in list(processes.items()):
            with open(log_path) as f:
                reached = re.findall(r"\[(\d+)\] collection=train ", f.read())
            log("%s: step %s/%d" % (name, reached[-1] if reached else 0, steps))
            if process.poll() is not None:
                if process.returncode != 0:
                    raise SystemExit("training %s failed (exit %d), see %s" % (
                        name, process.returncode, log_path))
                del processes[name]


def write_train_fasta(corpus, path, limit=None):
    """The corpus's train sequences (every train shard, in shard order: the job's shuffle) as
    FASTA, by record id; the first `limit` of them if given. Returns how many were written."""
    # Imported here: TensorFlow takes seconds to import, and only this stage needs it.
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
    items = []
    for shard in sorted(glob.glob(os.path.join(corpus, "train.tfrecord-*"))):
        for payload in tfrecords.read_tfrecords(shard):
            feature = example_pb2.Example.FromString(payload).features.feature
            items.append((feature[tfrecords.ID].bytes_list.value[0].decode(),
                          feature[tfrecords.SEQUENCE].bytes_list.value[0].decode()))
    data.write_fasta(path, items[:limit])
    return len(items[:limit])


def study_step(out, arms):
    """The last checkpoint step every arm has (the target step, unless training was cut short)."""
    common = None
    for name, _ in arms:
        steps = set(checkpoint_steps(os.path.join(out, "models", name)))
        common = steps if common is None else common & steps
    if not common:
        raise SystemExit("no checkpoint step common to all arms under %s/models" % out)
    return max(common)


def masked_accuracy(eval_dir, seed=0):
    """task -> figures from t5x.eval's output: the metric of `<task>-metrics.jsonl` and, from
    the predictions (`<task>-<step>.jsonl`), the same accuracy with a bootstrap interval over
    examples and what always answering `L` would score on the same masked residues."""
    metrics = {}
    for path in sorted(glob.glob(os.path.join(eval_dir, "inference_eval", "*-metrics.jsonl"))):
        task = os.path.basename(path)[:-len("-metrics.jsonl")]
        with open(path) as f:
            record = json.loads(f.read().splitlines()[-1])
        figures = {k: v for k, v in record.items() if k != "step"}
        predictions = os.path.join(os.path.dirname(path), "%s-%06d.jsonl" % (task, record["step"]))
        if os.path.exists(predictions):
            correct, always_l, counts = [], 0, []
            with open(predictions) as f:
                for line in f:
                    item = json.loads(line)
                    expected = metrics_lib.residue_letters(item["target"])
                    total = len(expected)
                    hits = round(total * metrics_lib.masked_residue_accuracy(
                        [item["target"]], [item["output"]])["masked_residue_accuracy"] / 100)
                    correct.append(hits)
                    counts.append(total)
                    always_l += expected.count("L")
            interval = linear.bootstrap_accuracy(correct, counts, seed)
            figures.update(accuracy=interval["accuracy"], ci_low=interval["ci_low"],
                           ci_high=interval["ci_high"], examples=len(counts),
                           masked_residues=sum(counts), always_l=always_l / sum(counts))
        metrics[task] = figures
    teacher_forced = os.path.join(eval_dir, TEACHER_FORCED_FILE)
    if os.path.exists(teacher_forced):
        with open(teacher_forced) as f:
            metrics[TEACHER_FORCED] = json.load(f)
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default=os.path.join(REPO_ROOT, "out", "study"))
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--arms", default=",".join(name for name, _ in ARMS),
                        help="names from ARMS")
    parser.add_argument("--train_steps", type=int, default=1000)
    parser.add_argument("--step", type=int, help="checkpoint step to evaluate and probe "
                        "(default: the last one all arms have)")
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="probe seed")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.output_dir)
    known = dict(ARMS)
    arms = [(name, known[name]) for name in args.arms.split(",")]
    stages = args.stages.split(",")
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit("unknown stages %s (known: %s)" % (sorted(unknown), ",".join(STAGES)))
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    probe_data = os.path.join(out, "probe_data")
    corpus = os.path.join(out, "corpus")
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    started = time.time()
    timings = {}

    def timed(stage, function):
        start = time.time()
        function()
        timings[stage] = round(time.time() - start, 1)
        log("%s done in %.0f s" % (stage, timings[stage]))

    if "data" in stages and not os.path.exists(os.path.join(probe_data, "manifest.json")):
        timed("data", lambda: _run(nice + [sys.executable, "-m", "probes.prepare",
                                           "--output_dir=" + probe_data],
                                   os.path.join(out, "logs", "prepare.log")))
    if "corpus" in stages and not os.path.exists(os.path.join(corpus, "manifest.json")):
        timed("corpus", lambda: _run(nice + [
            sys.executable, "-m", "pipelines.uniref", "--input=" + CORPUS_FASTA,
            "--output_dir=" + corpus, "--release=mmseqs2-examples",
            "--benchmark_fasta=" + os.path.join(probe_data, "ss_test.fasta"),
            "--benchmark_fasta=" + os.path.join(probe_data, "gb1_wildtype.fasta"),
            "--validation_fraction=0.05", "--num_train_shards=4", "--num_validation_shards=1",
            "--overwrite"], os.path.join(out, "logs", "corpus.log")))
    profiles = os.path.join(out, "profiles")
    if ("profiles" in stages and any(name in PROFILE_ARMS for name, _ in arms)
            and not os.path.exists(os.path.join(profiles, "manifest.json"))):
        train_fasta = os.path.join(out, "corpus_train.fasta")
        queries_fasta = os.path.join(out, "profile_queries.fasta")

        def profiles_stage():
            log("%d train sequences -> %s" % (write_train_fasta(corpus, train_fasta), train_fasta))
            log("%d of them as queries -> %s" % (
                write_train_fasta(corpus, queries_fasta, PROFILE_QUERIES), queries_fasta))
            _run(nice + [
                sys.executable, "-m", "pipelines.profiles", "--input=" + queries_fasta,
                "--search_db=" + train_fasta, "--output_dir=" + profiles,
                "--search_max_hits=%d" % PROFILE_MAX_HITS,
                "--benchmark_fasta=" + os.path.join(probe_data, "ss_test.fasta"),
                "--benchmark_fasta=" + os.path.join(probe_data, "gb1_wildtype.fasta"),
                "--num_train_shards=4", "--num_validation_shards=1", "--overwrite"],
                os.path.join(out, "logs", "profiles.log"))
        timed("profiles", profiles_stage)
    if "train" in stages:
        timed("train", lambda: train(out, arms, args.train_steps, args.nice))
    step = args.step or study_step(out, arms)
    for name, _ in arms:
        checkpoint = os.path.join(out, "models", name, "checkpoint_%d" % step)
        eval_dir = os.path.join(out, "eval", name, "step_%d" % step)
        if "eval" in stages and not os.path.exists(os.path.join(eval_dir, TEACHER_FORCED_FILE)):
            timed("teacher_forced_" + name, lambda: _run(nice + [
                sys.executable, "-m", "probes.masked_lm", "--checkpoint=" + checkpoint,
                "--gin_file=" + MODEL_GIN, "--data_dir=" + corpus, "--mask_probability=0.2",
                "--examples=%d" % TEACHER_FORCED_EXAMPLES,
                "--output=" + os.path.join(eval_dir, TEACHER_FORCED_FILE)],
                os.path.join(out, "logs", "teacher_forced_%s.log" % name)))
        if "eval" in stages and not glob.glob(
                os.path.join(eval_dir, "inference_eval", "*-metrics.jsonl")):
            timed("eval_" + name, lambda: _run(nice + [
                sys.executable, "-m", "t5x.eval", "--gin_file=" + MODEL_GIN,
                "--gin_file=gin/runs/eval.gin", "--gin_file=gin/ablations/mlm_only.gin",
                "--gin_file=gin/ablations/single_mask_probability.gin",
                "--gin.CHECKPOINT_PATH='%s'" % checkpoint,
                "--gin.EVAL_OUTPUT_DIR='%s'" % eval_dir, "--gin.DATA_DIR='%s'" % corpus,
                "--gin.TASK_FEATURE_LENGTHS=" + FEATURE_LENGTHS,
                "--gin.Evaluator.num_examples=%d" % EVAL_EXAMPLES],
                os.path.join(out, "logs", "eval_%s.log" % name)))
        probe_dir = os.path.join(out, "probes", name, "step_%d" % step)
        if "probe" in stages and not os.path.exists(os.path.join(probe_dir, "results.json")):
            timed("probe_" + name, lambda: _run(nice + [
                sys.executable, "-m", "probes.run", "--checkpoint=" + checkpoint,
                "--gin_file=" + MODEL_GIN, "--data_dir=" + probe_data,
                "--tasks=ss3,ss8,gb1", "--seed=%d" % args.seed, "--output_dir=" + probe_dir,
                # The baselines do not depend on the arm: computed once, with the first.
                "--baselines=" + ("one_hot,random_weights" if name == ARMS[0][0] else "")]
            + ["--%s=%d" % item for item in PROBE_LIMITS.items()],
                os.path.join(out, "logs", "probe_%s.log" % name)))
    if "report" in stages:
        results = {}
        for name, _ in arms:
            with open(os.path.join(out, "probes", name, "step_%d" % step, "results.json")) as f:
                results[name] = json.load(f)
        summary = report.study_summary(
            results, {name: masked_accuracy(os.path.join(out, "eval", name, "step_%d" % step))
                      for name, _ in arms},
            arms=[{"name": name, "train_args": arm_args} for name, arm_args in arms],
            step=step, train_steps=args.train_steps)
        with open(os.path.join(out, "study.json"), "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
        report.plot_study(summary, os.path.join(out, "study.png"))
        print(report.study_table(summary))
    log("stages %s done in %.0f s (%s)" % (",".join(stages), time.time() - started, timings))


if __name__ == "__main__":
    main()
