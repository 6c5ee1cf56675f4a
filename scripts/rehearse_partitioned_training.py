"""Partitioned T5X training on simulated devices: the TPU v4 runs' partitioning, rehearsed on CPU.

    python -m scripts.rehearse_partitioned_training --data_dir=DIR --work_dir=DIR [--json=PATH]

Runs `t5x.train`'s `train()` in this process (one import, several runs) on
`--num_devices` simulated CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count`, set
here before jax starts), with the demo run config (gin/runs/demo_cpu.gin) shrunk to a few steps,
the tiny Ankh3-shaped model widened so that Adafactor factors its matrices (as it does every
Ankh3 matrix), `gin/partitioning/slice_mesh.gin` and t5x's standard logical axis rules:

  1. `1x1`: one device, unpartitioned: the reference losses;
  2. `2x4`: 2 data x 4 model (the XL config's layout: 4-way model parallel), with checkpoints;
  3. `8x1`: 8-way data parallel (the Large config's layout);
  4. `4x2<-2x4` and `1x1<-2x4`: the 2x4 run's middle checkpoint (parameters, Adafactor state
     and dataset iterator) restored onto another mesh, trained on to the last step.

Prints the parameter -> partition spec table of the 2x4 run (t5x's `model-info.txt`: parameters
and optimizer slots), and each run's per-step losses against the reference. With `--json`,
writes the figures there (the tests and `make rehearse` read them).
"""
import os
import sys

DEFAULT_NUM_DEVICES = 8
if "jax" not in sys.modules:  # the device count is read once, when jax starts its CPU backend
    _count = DEFAULT_NUM_DEVICES
    for _arg in sys.argv:
        if _arg.startswith("--num_devices="):
            _count = int(_arg.split("=", 1)[1])
    os.environ["XLA_FLAGS"] = " ".join(
        [f for f in os.environ.get("XLA_FLAGS", "").split()
         if not f.startswith("--xla_force_host_platform_device_count")]
        + ["--xla_force_host_platform_device_count=%d" % _count])

import argparse  # noqa: E402
import collections  # noqa: E402
import ast  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
from typing import Dict, List, Sequence  # noqa: E402

import gin  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from t5x import train as t5x_train  # noqa: E402

from scripts import loss_curves  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T5X_GIN_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(t5x_train.__file__)))
GIN_FILES = ("gin/runs/demo_cpu.gin", "gin/partitioning/slice_mesh.gin")
# The tiny model with every matrix at least 128 wide: Adafactor factors a matrix's second moment
# only when both dimensions are >= 128 (`min_dim_size_to_factor`), as they are in every Ankh3
# model, so the factored slots (v_row, v_col) are partitioned here as they are there.
MODEL_BINDINGS = (
    "Ankh3Config.emb_dim = 128",
    "Ankh3Config.num_heads = 4",
    "Ankh3Config.head_dim = 32",
    "Ankh3Config.mlp_dim = 256",
)
# Logical axes that t5x's standard rules map to the `model` mesh axis.
MODEL_SHARDED_AXES = ("vocab", "mlp", "heads", "joined_kv")
_MODEL_INFO_LINE = re.compile(
    r"Variable (\S+)\s+size (\d+)\s+shape (\(.*?\))\s+partition spec (.*)$")


def run_bindings(model_dir: str, data_dir: str, steps: int, checkpoint_period: int,
                 batch_size: int, num_partitions: int, num_devices: int) -> List[str]:
    """The gin bindings of one rehearsal run (after `GIN_FILES`)."""
    return list(MODEL_BINDINGS) + [
        "MODEL_DIR = '%s'" % model_dir,
        "DATA_DIR = '%s'" % data_dir,
        "TRAIN_STEPS = %d" % steps,
        "BATCH_SIZE = %d" % batch_size,
        "TASK_FEATURE_LENGTHS = {'inputs': 32, 'targets': 32}",
        "utils.SaveCheckpointConfig.period = %d" % checkpoint_period,
        "train.train_eval_dataset_cfg = None",
        "train.run_eval_before_training = False",
        "SliceMeshPartitioner.num_partitions = %d" % num_partitions,
        "SliceMeshPartitioner.num_devices = %d" % num_devices,
    ]


_train_using_gin = None


def train(bindings: Sequence[str]) -> None:
    """`python -m t5x.train --gin_file=GIN_FILES --gin.BINDINGS`, in this process."""
    global _train_using_gin
    saved_main, saved_cwd = sys.modules["__main__"], os.getcwd()
    sys.modules["__main__"] = t5x_train  # `import __main__ as train_script` in the run configs
    os.chdir(REPO_ROOT)
    try:
        if _train_using_gin is None:
            _train_using_gin = gin.configurable(t5x_train.train)
        gin.clear_config()
        for path in (".", T5X_GIN_ROOT):
            gin.add_config_file_search_path(path)
        gin.parse_config_files_and_bindings(list(GIN_FILES), list(bindings))
        _train_using_gin()
    finally:
        gin.clear_config()
        os.chdir(saved_cwd)
        sys.modules["__main__"] = saved_main


def losses(model_dir: str) -> Dict[int, float]:
    """Per-step training loss of a run (every step: the demo config's stats_period is 1)."""
    curve = loss_curves.read_scalar(os.path.join(model_dir, "train"), loss_curves.LOSS_TAG)
    return dict(zip(curve.steps, curve.values))


def partition_table(model_dir: str) -> List[dict]:
    """t5x's `model-info.txt` of a run: name, size, logical shape, partition spec of every
    parameter and optimizer slot."""
    rows = []
    with open(os.path.join(model_dir, "model-info.txt")) as f:
        for line in f:
            match = _MODEL_INFO_LINE.match(line.strip())
            if match:
                name, size, shape, spec = match.groups()
                rows.append({"name": name, "size": int(size), "shape": shape, "spec": spec})
    return rows


def misplaced_slots(rows: Sequence[dict]) -> List[str]:
    """Variables not sharded as the standard rules intend: a dimension named by a
    model-sharded logical axis whose spec entry is not `'model'`, or another dimension that is
    sharded. Adafactor's full second moments (`v`) must follow their parameter's axes; its
    factored ones (`v_row`, `v_col`) are replicated, as t5x's `Adafactor.derive_logical_axes`
    intends."""
    wrong = []
    for row in rows:
        if re.search(r"/(v_row|v_col)$", row["name"]):
            # t5x's Adafactor replicates the factored moments (vectors of one dimension's size).
            if row["spec"] != "None":
                wrong.append("%s: spec %s, expected replicated" % (row["name"], row["spec"]))
            continue
        axes = re.findall(r"(\w+)=\d+", row["shape"])
        if not axes:  # unnamed: scalars and the (1,) placeholders of unused slots
            continue
        spec = ["-" if entry is None else entry
                for entry in (ast.literal_eval(row["spec"]) or ())]
        if len(spec) != len(axes):
            wrong.append("%s: spec %s for shape %s" % (row["name"], row["spec"], row["shape"]))
            continue
        expected = ["model" if axis in MODEL_SHARDED_AXES else "-" for axis in axes]
        if spec != expected:
            wrong.append("%s: spec %s for shape %s" % (row["name"], row["spec"], row["shape"]))
    return wrong


def compare(reference: Dict[int, float], other: Dict[int, float]) -> dict:
    """Max absolute and relative differences of `other`'s losses from `reference`'s, over the
    steps `other` trained."""
    steps = sorted(other)
    ref = np.array([reference[s] for s in steps])
    got = np.array([other[s] for s in steps])
    return {"steps": steps, "max_abs_diff": float(np.max(np.abs(got - ref))),
            "max_rel_diff": float(np.max(np.abs(got - ref) / np.abs(ref)))}


def print_partition_table(rows: Sequence[dict], mesh: str, limit: int) -> None:
    """One line per parameter (the first `limit` of each kind of layer): its logical shape and
    partition spec, then its Adafactor slots' specs."""
    print("parameter -> partition spec [Adafactor slots], on the %s mesh (t5x model-info.txt):"
          % mesh)
    slots = collections.defaultdict(list)
    for row in rows:
        match = re.match(r"param_states/(.*)/(m|v|v_row|v_col)$", row["name"])
        if match and not row["shape"].startswith("(1,)"):
            slots[match.group(1)].append("%s %s" % (match.group(2), row["spec"]))
    params = [row for row in rows if not row["name"].startswith("param_states/")]
    shown = [row for row in params if row["name"] != "step" and (
        "layers_" not in row["name"] or "/layers_0/" in row["name"])][:limit]
    for row in shown:
        print("  %-52s %-30s %-16s [%s]" % (row["name"], row["shape"], row["spec"],
                                           ", ".join(slots[row["name"]])))
    print("  ... %d parameters and %d optimizer slots in all" % (
        len(params), len(rows) - len(params)))


def rehearse(data_dir: str, work_dir: str, steps: int, checkpoint_step: int,
             batch_size: int) -> dict:
    """Runs the five trainings of the module docstring and returns their figures."""
    num_devices = jax.device_count()
    if steps <= checkpoint_step or steps % checkpoint_step:
        raise ValueError("steps (%d) must be a multiple of checkpoint_step (%d) above it"
                         % (steps, checkpoint_step))

    def model_dir(name):
        return os.path.join(work_dir, name.replace("<-", "_from_"))

    def run(name, num_partitions, devices):
        train(run_bindings(model_dir(name), data_dir, steps, checkpoint_step, batch_size,
                           num_partitions, devices))
        return losses(model_dir(name))

    results = {"num_devices": num_devices, "steps": steps, "checkpoint_step": checkpoint_step,
               "runs": {}}
    reference = run("1x1", 1, 1)
    results["reference_losses"] = reference
    partitioned_layout = (2, num_devices // 2)
    meshes = {"%dx%d" % partitioned_layout: partitioned_layout[1],
              "%dx1" % num_devices: 1}
    for name, num_partitions in meshes.items():
        results["runs"][name] = compare(reference, run(name, num_partitions, num_devices))
    source = "%dx%d" % partitioned_layout
    table = partition_table(model_dir(source))
    results["partition_table_mesh"] = source
    results["partition_table"] = table
    results["misplaced"] = misplaced_slots(table)

    checkpoint = "checkpoint_%d" % checkpoint_step
    for name, num_partitions, devices in (
            ("%dx%d<-%s" % (num_devices // 2, 2, source), 2, num_devices),
            ("1x1<-%s" % source, 1, 1)):
        os.makedirs(model_dir(name))
        shutil.copytree(os.path.join(model_dir(source), checkpoint),
                        os.path.join(model_dir(name), checkpoint))
        resumed = run(name, num_partitions, devices)
        comparison = compare(reference, resumed)
        comparison["restored_from"] = "%s/%s" % (source, checkpoint)
        results["runs"][name] = comparison
    return results


def print_report(results: dict, table_limit: int = 40) -> None:
    print_partition_table(results["partition_table"], results["partition_table_mesh"],
                          table_limit)
    if results["misplaced"]:
        print("NOT sharded as the logical axis rules intend:")
        for line in results["misplaced"]:
            print("  " + line)
    else:
        print("every parameter and optimizer slot is sharded as the logical axis rules intend")
    print("\nper-step losses against the unpartitioned run (1x1, %d steps):"
          % results["steps"])
    for name, comparison in results["runs"].items():
        origin = (" (restored from %s)" % comparison["restored_from"]
                  if "restored_from" in comparison else "")
        print("  %-10s steps %d-%d: max |diff| %.3g, max rel diff %.3g%s" % (
            name, comparison["steps"][0], comparison["steps"][-1],
            comparison["max_abs_diff"], comparison["max_rel_diff"], origin))


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="output directory of pipelines.uniref")
    parser.add_argument("--work_dir", required=True, help="model directories go here")
    parser.add_argument("--num_devices", type=int, default=DEFAULT_NUM_DEVICES,
                        help="simulated CPU devices (even; read before jax starts)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--checkpoint_step", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if jax.device_count() != args.num_devices:
        raise SystemExit("jax sees %d devices, not %d: jax started before XLA_FLAGS was set"
                         % (jax.device_count(), args.num_devices))
    results = rehearse(args.data_dir, args.work_dir, args.steps, args.checkpoint_step,
                       args.batch_size)
    print_report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
