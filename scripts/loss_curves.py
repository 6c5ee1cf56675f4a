"""Loss curves of a T5X run, read from its TensorBoard event files, as a PNG and a JSON summary.

    python -m scripts.loss_curves --model_dir=out/sample/model
        # writes out/sample/loss_curves.png and out/sample/loss_summary.json (next to the model dir)

T5X writes one event directory per metrics collection under MODEL_DIR: `train/` (the training
mixture, one point per `stats_period` steps) and `training_eval/<task>/` (teacher-forced loss on
the validation split of each task of the mixture, and of the mixture itself, every `eval_period`
steps). A run that was stopped and restarted leaves one event file per process in each directory,
and the steps between its last checkpoint and the stop appear twice; the later file wins, since
the restarted run recomputed those steps from the checkpoint.

A run of the profile model (models/profile_model.py) also gets a third panel: the profile KL per
residue of each collection that has profiles (train, and the profile task's validation), and
the summary's `profile_kl_per_residue` and `profile_argmax_agreement`.
"""
import argparse
import dataclasses
import glob
import json
import logging
import os
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing import event_file_loader  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

TRAIN_COLLECTION = "train"
EVAL_COLLECTION = "training_eval"
# Per-token loss over the real (non-padding) target tokens: cross-entropy plus t5x's z-loss
# (1e-4 * log(Z)^2, a few thousandths here). T5X's `loss` is a sum over the batch's tokens.
LOSS_TAG = "loss_per_nonpadding_target_token"
ACCURACY_TAG = "accuracy"
# The profile model's metrics (models/profile_model.py); tasks without profiles write zeros.
PROFILE_KL_TAG = "profile/kl_per_residue"
PROFILE_AGREEMENT_TAG = "profile/argmax_agreement"


@dataclasses.dataclass(frozen=True)
class Curve:
    """One scalar of one collection: `steps[i]` -> `values[i]`, steps ascending."""

    steps: List[int]
    values: List[float]


def _first_wall_time(path: str) -> float:
    for event in event_file_loader.EventFileLoader(path).Load():
        return event.wall_time
    return float("inf")  # an empty file (a writer killed before its first flush) sorts last


def _event_files(log_dir: str) -> List[str]:
    """The event files of one collection in the order they were started (a restart adds one).

    Ordered by the time of each file's first event (the name only has whole seconds)."""
    files = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    return sorted(files, key=lambda path: (_first_wall_time(path), path))


def read_scalar_runs(log_dir: str, tag: str) -> List[Dict[int, float]]:
    """`{step: value}` of `tag` for each event file in `log_dir`, in the order they were written.

    One file per process that wrote the collection: an interrupted and restarted run gives two.
    Within a file, a step written twice keeps its last value.
    """
    runs = []
    for path in _event_files(log_dir):
        values = {}
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    values[int(event.step)] = float(tensor_util.make_ndarray(value.tensor))
        runs.append(values)
    return runs


def read_scalar(log_dir: str, tag: str) -> Curve:
    """The curve of `tag` in `log_dir`; where files overlap (a restart), the later file wins."""
    merged = {}
    for values in read_scalar_runs(log_dir, tag):
        merged.update(values)
    steps = sorted(merged)
    return Curve(steps=steps, values=[merged[step] for step in steps])


def eval_collections(model_dir: str) -> List[str]:
    """The names (task or mixture) under `MODEL_DIR/training_eval/`, sorted."""
    root = os.path.join(model_dir, EVAL_COLLECTION)
    if not os.path.isdir(root):
        return []
    return sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))


def read_run(model_dir: str, tag: str) -> Dict[str, Curve]:
    """`{'train': curve, '<task>': curve, ...}` of `tag` for a T5X model directory; collections
    without the tag are left out."""
    curves = {TRAIN_COLLECTION: read_scalar(os.path.join(model_dir, TRAIN_COLLECTION), tag)}
    for name in eval_collections(model_dir):
        curves[name] = read_scalar(os.path.join(model_dir, EVAL_COLLECTION, name), tag)
    return {name: curve for name, curve in curves.items() if curve.steps}


def summarize(curves: Dict[str, Curve]) -> Dict[str, dict]:
    """First and last point of each curve, and how many points it has."""
    return {
        name: {"first_step": curve.steps[0], "first": curve.values[0],
               "last_step": curve.steps[-1], "last": curve.values[-1],
               "points": len(curve.steps)}
        for name, curve in curves.items()
    }


def read_profile_run(model_dir: str, tag: str) -> Dict[str, Curve]:
    """`read_run` of a profile metric, without the collections that have no profiles (all
    values zero, or not a number)."""
    return {name: curve for name, curve in read_run(model_dir, tag).items()
            if any(value > 0 for value in curve.values)}


def _plot_train_and_validation(axis, curves: Dict[str, Curve], train_label: str, ylabel: str,
                               title: str) -> None:
    """The train curve as a thin grey line, each validation curve with markers."""
    train = curves.get(TRAIN_COLLECTION)
    if train:
        axis.plot(train.steps, train.values, color="0.7", linewidth=0.8, label=train_label)
    for name, curve in curves.items():
        if name != TRAIN_COLLECTION:
            axis.plot(curve.steps, curve.values, marker="o", markersize=3,
                      label="validation: %s" % name)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)


def plot(losses: Dict[str, Curve], accuracies: Dict[str, Curve], output_path: str,
         title: str, profile_kl: Optional[Dict[str, Curve]] = None) -> None:
    """Writes a PNG: per-task validation loss over the per-step training loss, per-task
    validation token accuracy and, given `profile_kl`, the profile KL per residue."""
    figure, axes = plt.subplots(1, 3 if profile_kl else 2,
                                figsize=(19.5 if profile_kl else 13, 4.8))
    loss_axes, accuracy_axes = axes[:2]
    _plot_train_and_validation(loss_axes, losses, "train (mixture, per step)",
                               "loss per target token (nats)", "loss")
    task_accuracies = {name: curve for name, curve in accuracies.items()
                       if name != TRAIN_COLLECTION}
    for name, curve in task_accuracies.items():
        accuracy_axes.plot(curve.steps, curve.values, marker="o", markersize=3, label=name)
    accuracy_axes.set_xlabel("step")
    accuracy_axes.set_ylabel("teacher-forced token accuracy")
    accuracy_axes.set_title("validation accuracy per task")
    if task_accuracies:
        accuracy_axes.legend(fontsize=8)
    else:
        accuracy_axes.text(0.5, 0.5, "no evaluation during this run", ha="center",
                           transform=accuracy_axes.transAxes)
    accuracy_axes.grid(alpha=0.3)
    if profile_kl:
        _plot_train_and_validation(axes[2], profile_kl, "train (profile examples, per step)",
                                   "KL(profile || head) per residue (nats)", "profile KL")
    figure.suptitle(title)
    figure.tight_layout()
    tmp_path = output_path + ".tmp"
    figure.savefig(tmp_path, dpi=110, format="png")
    plt.close(figure)
    os.replace(tmp_path, output_path)


def write_loss_curves(model_dir: str, output_dir: Optional[str] = None) -> Dict[str, dict]:
    """Reads `model_dir`'s event files and writes `loss_curves.png` and `loss_summary.json` into
    `output_dir` (default: the directory that holds `model_dir`). Returns the summary."""
    model_dir = os.path.normpath(model_dir)
    output_dir = output_dir or os.path.dirname(model_dir) or "."
    losses = read_run(model_dir, LOSS_TAG)
    if TRAIN_COLLECTION not in losses:
        raise FileNotFoundError(
            "no %r scalars under %s: not a T5X model directory, or training wrote no summary yet"
            % (LOSS_TAG, os.path.join(model_dir, TRAIN_COLLECTION)))
    accuracies = read_run(model_dir, ACCURACY_TAG)
    profile_kl = read_profile_run(model_dir, PROFILE_KL_TAG)
    os.makedirs(output_dir, exist_ok=True)
    png_path = os.path.join(output_dir, "loss_curves.png")
    plot(losses, accuracies, png_path, title=model_dir, profile_kl=profile_kl)
    summary = {"model_dir": model_dir, "loss_tag": LOSS_TAG, "loss": summarize(losses),
               "accuracy": summarize(accuracies)}
    if profile_kl:
        agreement = {name: curve for name, curve in read_run(
            model_dir, PROFILE_AGREEMENT_TAG).items() if name in profile_kl}
        summary.update(profile_kl_per_residue=summarize(profile_kl),
                       profile_argmax_agreement=summarize(agreement))
    with open(os.path.join(output_dir, "loss_summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
        handle.write("\n")
    logging.info("wrote %s and loss_summary.json", png_path)
    return summary


def _format_table(summary: Dict[str, dict]) -> str:
    lines = ["%-22s %12s %12s %8s" % ("collection", "loss first", "loss last", "steps")]
    for name, row in summary["loss"].items():
        lines.append("%-22s %12.4f %12.4f %4d-%-4d" % (
            name, row["first"], row["last"], row["first_step"], row["last_step"]))
    for name, row in summary.get("profile_kl_per_residue", {}).items():
        lines.append("%-22s %12.4f %12.4f %4d-%-4d  profile KL per residue" % (
            name, row["first"], row["last"], row["first_step"], row["last_step"]))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="T5X MODEL_DIR of a run.")
    parser.add_argument("--output_dir", default=None,
                        help="Where to write the PNG and JSON (default: MODEL_DIR's parent).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    print(_format_table(write_loss_curves(args.model_dir, args.output_dir)))


if __name__ == "__main__":
    main()
