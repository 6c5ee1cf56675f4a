"""The probe harness: frozen-embedding probes of one encoder, with baselines in the same run.

    python -m probes.run --checkpoint=DIR/checkpoint_N --gin_file=gin/models/<model>.gin \
        --tasks=ss3,ss8,gb1 --data_dir=out/probe_data --output_dir=OUT
    python -m probes.run --hf_dir=DIR [--gin_file=...] ...   # a model from models.export_hf

Embeds the probe sets (`python -m probes.prepare`) with the encoder through `models.embed`,
trains each task's probe (`probes.linear`) and writes `OUT/results.json`, one object per task and
per model:

    {"ss3": {"model": {"q3": 0.61, "ci_low": 0.60, "ci_high": 0.62, ...},
             "one_hot": {...}, "random_weights": {...}},
     "ss8": {... "q8" ...}, "gb1": {"model": {"spearman": ..., "ci_low": ..., ...}, ...}}

and `OUT/results.png`. Baselines: `one_hot` (SS: the residues in a window of +-7; GB1: the
one-hot of every position of the variant) and `random_weights` (the same network, initialized
with --seed and not trained; needs --gin_file); `--baselines` picks them. With the one-hot
baseline, each other entry says whether it beats it (`beats_one_hot`: its interval lies above
one-hot's figure). Figures are deterministic for a seed.
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from probes import data
from probes import linear
from probes import report

TASKS = ("ss3", "ss8", "gb1")
BASELINES = ("one_hot", "random_weights")
LIMITS = ("ss_train", "ss_test", "gb1_train", "gb1_test")
SS_TASKS = {"ss3": ("q3", data.SS3_CLASSES), "ss8": ("q8", data.SS8_CLASSES)}


def log(message):
    print("[probes %s] %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def load_probe_sets(data_dir: str, tasks, limits: dict = None) -> dict:
    """{"ss": {"train": [...], "test": [...]}, "gb1": {...}} of the tasks asked for; `limits`
    ("ss_train" etc. -> N) keeps the first N items of a set (the sets are in hash order, so
    that is a subsample; a test subset stays inside the decontaminated test set)."""
    limits = limits or {}
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        raise FileNotFoundError("%s has no manifest.json: prepare the probe sets first with "
                                "python -m probes.prepare --output_dir=%s" % (data_dir, data_dir))
    sets = {}
    if any(task in SS_TASKS for task in tasks):
        sets["ss"] = {}
    if "gb1" in tasks:
        sets["gb1"] = {}
    for name, splits in sets.items():
        for split in ("train", "test"):
            items = data.read_jsonl(os.path.join(data_dir, "%s_%s.jsonl" % (name, split)))
            splits[split] = items[:limits.get("%s_%s" % (name, split)) or None]
    return sets


def probe_features(sets: dict, features) -> dict:
    """Runs `features(list of sequences) -> list of [len, d] arrays` on each probe set."""
    out = {}
    for name, splits in sets.items():
        out[name] = {split: features([item["sequence"] for item in items])
                     for split, items in splits.items()}
    return out


def run_probes(sets: dict, features: dict, tasks, seed: int, per_position: bool) -> dict:
    """{task: figures} for one feature set. `per_position`: GB1 features are [n, d] already
    (the one-hot baseline) rather than per-residue matrices to mean-pool."""
    results = {}
    for task in tasks:
        if task in SS_TASKS:
            metric, classes = SS_TASKS[task]
            figures = linear.per_residue_probe(
                features["ss"]["train"], [item[task] for item in sets["ss"]["train"]],
                features["ss"]["test"], [item[task] for item in sets["ss"]["test"]], classes, seed)
            figures[metric] = figures.pop("accuracy")
        else:
            pool = (lambda x: np.asarray(x)) if per_position else (
                lambda arrays: np.stack([a.mean(axis=0) for a in arrays]))
            figures = linear.regression_probe(
                pool(features["gb1"]["train"]), [item["y"] for item in sets["gb1"]["train"]],
                pool(features["gb1"]["test"]), [item["y"] for item in sets["gb1"]["test"]], seed)
        results[task] = figures
        log("  %s: %s" % (task, {k: round(v, 4) if isinstance(v, float) else v
                                 for k, v in figures.items()}))
    return results


def one_hot_features(sets: dict) -> dict:
    features = {}
    if "ss" in sets:
        features["ss"] = {split: [linear.one_hot_window(item["sequence"]) for item in items]
                          for split, items in sets["ss"].items()}
    if "gb1" in sets:
        features["gb1"] = {split: linear.one_hot_positions([item["sequence"] for item in items])
                           for split, items in sets["gb1"].items()}
    return features


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a T5X checkpoint directory (with --gin_file)")
    parser.add_argument("--gin_file", help="the model's gin file (gin/models/*.gin)")
    parser.add_argument("--hf_dir", help="a Hugging Face directory from models.export_hf")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--data_dir", default="out/probe_data",
                        help="output of python -m probes.prepare")
    parser.add_argument("--output_dir", required=True)
    for name in LIMITS:
        parser.add_argument("--" + name, type=int, default=0,
                            help="use the first N items of this set (0: all)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random-weights initialization and bootstrap")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help="any of %s, comma-separated, or empty for none" % ",".join(BASELINES))
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    if set(tasks) - set(TASKS) or not tasks:
        parser.error("--tasks: choose from %s" % ",".join(TASKS))
    if bool(args.checkpoint) == bool(args.hf_dir):
        parser.error("give exactly one of --checkpoint (with --gin_file) or --hf_dir")
    if args.checkpoint and not args.gin_file:
        parser.error("--checkpoint needs --gin_file (the model config it was trained with)")
    baselines = [b for b in args.baselines.split(",") if b]
    if set(baselines) - set(BASELINES):
        parser.error("--baselines: choose from %s" % ",".join(BASELINES))
    if "random_weights" in baselines and not args.gin_file:
        parser.error("the random_weights baseline needs --gin_file (or --baselines=one_hot)")
    logging.getLogger("absl").setLevel(logging.WARNING)
    from models import embed  # noqa: E402  (imports JAX; parse the flags first)

    sets = load_probe_sets(args.data_dir, tasks, {name: getattr(args, name) for name in LIMITS})
    os.makedirs(args.output_dir, exist_ok=True)
    results_path = os.path.join(args.output_dir, "results.json")
    if os.path.exists(results_path):
        os.remove(results_path)

    encoders = {}
    if args.checkpoint:
        encoders["model"] = lambda: embed.load_encoder(checkpoint=args.checkpoint,
                                                       gin_file=args.gin_file)
    else:
        encoders["model"] = lambda: embed.load_encoder(hf_dir=args.hf_dir)
    if "random_weights" in baselines:
        encoders["random_weights"] = lambda: embed.load_encoder(gin_file=args.gin_file,
                                                                random_seed=args.seed)
    by_model = {}
    for name, load in encoders.items():
        log("%s: loading the encoder" % name)
        encoder = load()
        log("%s: embedding (d_model %d)" % (name, encoder.d_model))
        features = probe_features(sets, lambda seqs: encoder.embed(seqs, progress=True))
        log("%s: probes" % name)
        by_model[name] = run_probes(sets, features, tasks, args.seed, per_position=False)
    if "one_hot" in baselines:
        log("one_hot: probes")
        by_model["one_hot"] = run_probes(sets, one_hot_features(sets), tasks, args.seed,
                                         per_position=True)
    results = {task: {name: figures[task] for name, figures in by_model.items()}
               for task in tasks}
    if "one_hot" in by_model:
        for task, models in results.items():
            metric = "spearman" if task == "gb1" else SS_TASKS[task][0]
            for name in models:
                if name != "one_hot":
                    models[name]["beats_one_hot"] = bool(
                        models[name]["ci_low"] > models["one_hot"][metric])
                    if not models[name]["beats_one_hot"]:
                        log("%s does not beat the one-hot baseline on %s" % (name, task))
    report.plot_results(results, os.path.join(args.output_dir, "results.png"))
    with open(results_path + ".tmp", "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    os.replace(results_path + ".tmp", results_path)
    log("wrote %s" % results_path)
    print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
