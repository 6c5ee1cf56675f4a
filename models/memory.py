"""Bytes per device of a T5X training run, from its gin config: computed, not guessed.

    python -m models.param_count --memory --gin_file=gin/runs/pretrain_ankh3_xl_tpu_v4.gin \
        --num_partitions=4 --num_devices=128

Parses the run config as `t5x.train` does, builds its model (network, vocabulary, Adafactor as
configured) and evaluates the shapes of the full train state (`jax.eval_shape` of the model's
`get_initial_variables` and the optimizer's state: nothing is allocated). Each array's partition
spec comes from the run's partitioner (`PjitPartitioner.get_mesh_axes` with its logical axis
rules) on a `data x model` mesh of `num_devices // num_partitions` x `num_partitions` devices, and
its bytes per device are its bytes divided by the sizes of the mesh axes it is split over.

  parameters    the train state's parameters (float32);
  optimizer     Adafactor's slots: factored second moments (v_row, v_col) for matrices whose two
                largest dimensions are >= 128, a full second moment (v) otherwise;
  gradients     one float32 gradient per parameter, sharded as the parameter; with
                `num_microbatches` > 1, t5x also keeps the running sum (one more copy);
  activations   an estimate (see `activation_bytes_per_device`) of what the backward pass keeps,
                for the per-device share of the batch (per microbatch).

A TPU v4 chip has 32 GiB of HBM and is one jax device (megacore); a v4-N slice has N / 2 chips.
"""
import contextlib
import dataclasses
import math
import os
import sys
from typing import Iterator, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

V4_HBM_BYTES = 32 * 2**30
# XLA keeps buffers, fragmentation and the compiled program itself besides the arrays counted
# here: a run is reported as fitting only with this share of HBM free.
HEADROOM = 0.15
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def run_config(gin_files: Sequence[str], bindings: Sequence[str] = (),
               main_module=None) -> Iterator[None]:
    """Gin parsed as `python -m t5x.train --gin_file=... --gin.BINDING` would, from the
    repository root (`import __main__` in the run configs means the t5x binary: `main_module`,
    default `t5x.train`; e.g. `t5x.eval` for an evaluation config)."""
    from t5x import train as t5x_train  # pylint: disable=import-outside-toplevel

    t5x_gin_root = os.path.dirname(os.path.dirname(os.path.abspath(t5x_train.__file__)))
    saved_main, saved_cwd = sys.modules["__main__"], os.getcwd()
    sys.modules["__main__"] = main_module or t5x_train
    os.chdir(REPO_ROOT)
    gin.clear_config()
    try:
        for path in (".", t5x_gin_root):
            gin.add_config_file_search_path(path)
        gin.parse_config_files_and_bindings(
            list(gin_files),
            ["MODEL_DIR = '/unused'", "DATA_DIR = '/unused'"] + list(bindings),
            finalize_config=False)
        yield
    finally:
        gin.clear_config()
        os.chdir(saved_cwd)
        sys.modules["__main__"] = saved_main


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one run on one mesh (see the module docstring)."""
    num_devices: int
    num_partitions: int
    batch_size: int
    num_microbatches: int
    parameters: int
    optimizer: int
    gradients: int
    activations: int
    unsharded_parameters: int  # float32 bytes of all parameters, for reference

    @property
    def total(self) -> int:
        return self.parameters + self.optimizer + self.gradients + self.activations

    def fits(self, hbm_bytes: int = V4_HBM_BYTES) -> bool:
        return self.total <= (1 - HEADROOM) * hbm_bytes


def _sharding_factor(spec, mesh_sizes) -> int:
    factor = 1
    for entry in (spec or ()):
        for axis in ((entry,) if isinstance(entry, str) else (entry or ())):
            factor *= mesh_sizes[axis]
    return factor


def _bytes_per_device(shapes, specs, mesh_sizes) -> int:
    """Sum over arrays of their bytes over the product of the mesh axes each is split over.
    Raises if a split dimension is not divisible by its mesh axes (pjit would refuse it)."""
    total = 0
    flat_shapes = jax.tree_util.tree_leaves_with_path(shapes)
    flat_specs = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: x is None or isinstance(
        x, jax.sharding.PartitionSpec))
    if len(flat_shapes) != len(flat_specs):
        raise ValueError("%d arrays but %d partition specs" % (len(flat_shapes), len(flat_specs)))
    for (path, shape), spec in zip(flat_shapes, flat_specs):
        for dim, entry in zip(shape.shape, spec or ()):
            split = _sharding_factor((entry,), mesh_sizes)
            if dim % split:
                raise ValueError("%s: dimension %d is not divisible by the %d devices of mesh "
                                 "axes %s" % (jax.tree_util.keystr(path), dim, split, entry))
        total += math.prod(shape.shape) * np.dtype(shape.dtype).itemsize // _sharding_factor(
            spec, mesh_sizes)
    return total


def activation_bytes_per_device(config, inputs_length: int, targets_length: int,
                                examples: int, num_partitions: int) -> int:
    """What the backward pass of `examples` examples keeps, per device, without remat.

    Per encoder token and layer: the two norm inputs and outputs and the two residual sums
    (6 x d), q, k, v and the attention output (4 x I), the attention weights (H x L_in, in
    float32 as t5x's softmax computes them, and their cast), the MLP's input projections and
    their product (3 x F). Per decoder token and layer: the same with self-attention over L_tgt,
    plus cross-attention (its norm and residual 3 x d, q and output 2 x I, weights H x L_in) and
    the encoder's keys and values per encoder token (2 x I). Plus the logits and their softmax
    in float32 (2 x vocab per decoder token). Tensors over heads, MLP width or vocabulary are
    split over the model axis (t5x's standard rules); the d-wide ones are replicated there.
    Activation dtype from the config (bfloat16 in the TPU runs). An estimate: XLA fuses some of
    these and keeps temporaries besides.
    """
    act = jnp.dtype(config.dtype).itemsize
    d, inner, mlp = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
    heads = config.num_heads
    n = num_partitions

    def attention_weights(length):
        return heads * length * (4 + act) / n

    encoder_token = 6 * d * act + 4 * inner * act / n + attention_weights(inputs_length) \
        + 3 * mlp * act / n
    decoder_token = (9 * d * act + 6 * inner * act / n + attention_weights(targets_length)
                     + attention_weights(inputs_length) + 3 * mlp * act / n)
    per_example = (inputs_length * (config.num_encoder_layers * encoder_token
                                    + config.num_decoder_layers * 2 * inner * act / n)
                   + targets_length * (config.num_decoder_layers * decoder_token
                                       + 2 * config.vocab_size * 4 / n))
    return int(math.ceil(examples * per_example))


@dataclasses.dataclass(frozen=True)
class RunShapes:
    """What a run config decides about memory, read once: the train state's shapes and
    logical axes, the network config, the partitioner's logical axis rules, lengths, batch."""
    state: object
    config: object
    logical_axis_rules: tuple
    lengths: dict
    batch_size: int
    num_microbatches: Optional[int]


def run_shapes(gin_files: Sequence[str], bindings: Sequence[str] = ()) -> RunShapes:
    """Parses the run config and evaluates the shapes of its full train state (no allocation)."""
    from t5x import models as t5x_models  # pylint: disable=import-outside-toplevel
    from t5x import partitioning  # pylint: disable=import-outside-toplevel
    from t5x import train_state as train_state_lib  # pylint: disable=import-outside-toplevel

    with run_config(gin_files, bindings):
        model = gin.get_configurable(t5x_models.EncoderDecoderModel)()
        rules = gin.get_configurable(partitioning.PjitPartitioner)().logical_axis_rules
        lengths = gin.query_parameter("%TASK_FEATURE_LENGTHS")
        batch_size = gin.query_parameter("%BATCH_SIZE")
        try:
            num_microbatches = gin.query_parameter("trainer.Trainer.num_microbatches")
        except ValueError:
            num_microbatches = None
    input_shapes = {"encoder_input_tokens": (1, lengths["inputs"]),
                    "decoder_input_tokens": (1, lengths["targets"])}

    def initial_train_state(rng):
        variables = model.get_initial_variables(rng, input_shapes)
        return train_state_lib.FlaxOptimTrainState.create(model.optimizer_def, variables)

    state = jax.eval_shape(initial_train_state, jax.random.PRNGKey(0))
    return RunShapes(state=state, config=model.module.config, logical_axis_rules=tuple(rules),
                     lengths=dict(lengths), batch_size=batch_size,
                     num_microbatches=num_microbatches)


def estimate(shapes: RunShapes, num_partitions: int, num_devices: int,
             num_microbatches: Optional[int] = None) -> MemoryEstimate:
    """Bytes per device of the run `shapes` describes on a `num_devices // num_partitions` x
    `num_partitions` mesh (see the module docstring). `num_microbatches` overrides the run's
    `trainer.Trainer.num_microbatches`."""
    from t5x import partitioning  # pylint: disable=import-outside-toplevel

    if num_devices % num_partitions:
        raise ValueError("num_partitions (%d) must divide num_devices (%d)"
                         % (num_partitions, num_devices))
    if num_microbatches is None:
        num_microbatches = shapes.num_microbatches
    num_microbatches = num_microbatches or 1
    data_parallel = num_devices // num_partitions
    if shapes.batch_size % (data_parallel * num_microbatches):
        raise ValueError("batch %d does not split into %d data-parallel groups x %d microbatches"
                         % (shapes.batch_size, data_parallel, num_microbatches))
    state = shapes.state
    specs = partitioning.PjitPartitioner(
        num_partitions=num_partitions,
        logical_axis_rules=shapes.logical_axis_rules).get_mesh_axes(state)
    mesh_sizes = {"data": data_parallel, "model": num_partitions}
    parameters = _bytes_per_device(state.params, specs.params, mesh_sizes)
    optimizer = _bytes_per_device(state.param_states, specs.param_states, mesh_sizes)
    gradients = parameters * (2 if num_microbatches > 1 else 1)
    examples = shapes.batch_size // data_parallel // num_microbatches
    activations = activation_bytes_per_device(shapes.config, shapes.lengths["inputs"],
                                              shapes.lengths["targets"], examples,
                                              num_partitions)
    unsharded = sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
                    for leaf in jax.tree_util.tree_leaves(state.params))
    return MemoryEstimate(num_devices=num_devices, num_partitions=num_partitions,
                          batch_size=shapes.batch_size, num_microbatches=num_microbatches,
                          parameters=parameters, optimizer=optimizer, gradients=gradients,
                          activations=activations, unsharded_parameters=unsharded)


def fewest_microbatches(shapes: RunShapes, num_partitions: int,
                        num_devices: int) -> Optional[MemoryEstimate]:
    """The estimate with the fewest microbatches (1, 2, 4, ...) that fits a v4 chip, or None
    when none does (down to one example per device)."""
    microbatches = 1
    while True:
        try:
            result = estimate(shapes, num_partitions, num_devices, microbatches)
        except ValueError:
            return None  # the per-device batch does not split further
        if result.fits():
            return result
        microbatches *= 2


def _gib(value: int) -> str:
    return "%.2f" % (value / 2**30)


def print_memory_table(gin_files: Sequence[str], partitions: Sequence[int],
                       devices: Sequence[int], bindings: Sequence[str] = ()) -> None:
    """One line per (devices, partitions): GiB per device by kind, and the fewest
    `num_microbatches` that fit a v4 chip with `HEADROOM` free."""
    print("%s: GiB per device (TPU v4 chip: %d GiB; fits = total <= %d%% of it)"
          % (" + ".join(gin_files), V4_HBM_BYTES // 2**30, round(100 * (1 - HEADROOM))))
    header = ("slice", "devices", "mesh", "batch/dev", "params", "optimizer", "gradients",
              "activations", "total", "fits", "num_microbatches to fit")
    rows = [header]
    shapes = run_shapes(gin_files, bindings)
    for num_devices in devices:
        for num_partitions in partitions:
            result = estimate(shapes, num_partitions, num_devices)
            fitting = fewest_microbatches(shapes, num_partitions, num_devices)
            advice = ("none (does not fit)" if fitting is None else
                      "%d (total %s)" % (fitting.num_microbatches, _gib(fitting.total)))
            rows.append((
                "v4-%d" % (2 * num_devices), str(num_devices),
                "%dx%d" % (num_devices // num_partitions, num_partitions),
                str(result.batch_size // (num_devices // num_partitions)),
                _gib(result.parameters), _gib(result.optimizer), _gib(result.gradients),
                _gib(result.activations), _gib(result.total),
                "yes" if result.fits() else "no", advice))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
