"""Profile curves of a T5X run of the profile model: KL per residue and argmax agreement, per
collection (train, and each task of the mixture on its validation split), as a PNG and JSON.

    python -m scripts.profile_curves --model_dir=out/profile/model
        # writes out/profile/profile_curves.png and out/profile/profile_summary.json

Drawn by scripts/loss_curves.py's plot (left: KL per weighted residue, right: agreement of the
profile's most likely residue with the head's). Tasks without profiles have no points.
"""
import argparse
import json
import os
from typing import List, Optional

from scripts import loss_curves

KL_TAG = "profile/kl_per_residue"
AGREEMENT_TAG = "profile/argmax_agreement"


def write_profile_curves(model_dir: str, output_dir: Optional[str] = None) -> dict:
    """Writes profile_curves.png and profile_summary.json into `output_dir` (default: the
    model directory's parent) and returns the summary."""
    output_dir = output_dir or os.path.dirname(os.path.abspath(model_dir))
    kl = {name: curve for name, curve in loss_curves.read_run(model_dir, KL_TAG).items()
          if any(value > 0 for value in curve.values)}
    if not kl:
        raise ValueError("%s has no %s summaries (not a profile model run?)" % (model_dir, KL_TAG))
    agreement = {name: curve for name, curve in loss_curves.read_run(
        model_dir, AGREEMENT_TAG).items() if name in kl}
    loss_curves.plot(kl, agreement, os.path.join(output_dir, "profile_curves.png"),
                     "profile KL per residue (left) and argmax agreement (right)")
    summary = {"model_dir": model_dir, "kl_per_residue": loss_curves.summarize(kl),
               "argmax_agreement": loss_curves.summarize(agreement)}
    with open(os.path.join(output_dir, "profile_summary.json"), "w") as out:
        json.dump(summary, out, indent=2, sort_keys=True)
    return summary


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="T5X MODEL_DIR of a profile run.")
    parser.add_argument("--output_dir", default=None)
    args = parser.parse_args(argv)
    summary = write_profile_curves(args.model_dir, args.output_dir)
    for name, values in sorted(summary["kl_per_residue"].items()):
        print("%-24s KL/residue %s" % (name, json.dumps(values, sort_keys=True)))


if __name__ == "__main__":
    main()
