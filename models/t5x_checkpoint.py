"""t5x checkpoints of the network: reading parameters by name, writing an initial checkpoint.

t5x writes two formats, and restores both:
- Orbax (t5x.train's default): `checkpoint_N/state`, an Orbax PyTree with `target` (the model
  parameters) and `state` (step, optimizer slots), next to `checkpoint_N/dataset`;
- the older T5X format: `checkpoint_N/checkpoint` (msgpack) with a TensorStore per array.

Reading by name restores only the arrays asked for, so a 7 GB Ankh3-Large encoder loads without
its decoder or optimizer state, and a checkpoint of a model with extra parameters (a head next to
the network) still gives the network's.
"""
import os
from typing import Mapping, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

STATE_ITEM = "state"
LEGACY_FILE = "checkpoint"


def read_params(checkpoint: str, top_level: Optional[Sequence[str]] = None) -> dict:
    """The `target` parameters of a t5x checkpoint as nested dicts of numpy float32 arrays.

    Args:
        checkpoint: a `checkpoint_N` directory written by t5x (either format).
        top_level: names of the top-level parameter collections to read (e.g.
            ("token_embedder", "encoder")); None reads all of them. Raises KeyError naming the
            checkpoint and what it holds when one is missing.
    """
    if _exists(os.path.join(checkpoint, LEGACY_FILE)):
        return _read_legacy(checkpoint, top_level)
    state = os.path.join(checkpoint, STATE_ITEM)
    if not _exists(state):
        raise FileNotFoundError(
            "%s is not a t5x checkpoint (neither %s/ nor %s inside; pass a checkpoint_N "
            "directory)" % (checkpoint, STATE_ITEM, LEGACY_FILE))
    checkpointer = ocp.PyTreeCheckpointer()
    target = checkpointer.metadata(state).item_metadata.tree["target"]
    names = _check_names(checkpoint, target, top_level)
    wanted = {"target": {name: target[name] for name in names}}
    item = jax.tree_util.tree_map(lambda m: np.zeros(m.shape, m.dtype), wanted)
    restore_args = jax.tree_util.tree_map(
        lambda m: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    restored = checkpointer.restore(state, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), restored["target"])


def top_level_names(checkpoint: str) -> list:
    """The names of a t5x checkpoint's top-level parameter collections (nothing restored)."""
    if _exists(os.path.join(checkpoint, LEGACY_FILE)):
        from t5x import checkpoints

        return sorted(checkpoints.load_t5x_checkpoint(checkpoint, lazy_parameters=True)["target"])
    state = os.path.join(checkpoint, STATE_ITEM)
    if not _exists(state):
        raise FileNotFoundError("%s is not a t5x checkpoint (neither %s/ nor %s inside)"
                                % (checkpoint, STATE_ITEM, LEGACY_FILE))
    return sorted(ocp.PyTreeCheckpointer().metadata(state).item_metadata.tree["target"])


def _exists(path: str) -> bool:
    from etils import epath

    return epath.Path(path).exists()


def _check_names(checkpoint: str, target: Mapping, top_level: Optional[Sequence[str]]) -> list:
    names = list(target) if top_level is None else list(top_level)
    missing = [name for name in names if name not in target]
    if missing:
        raise KeyError("%s holds no parameters %s (it has %s)"
                       % (checkpoint, missing, sorted(target)))
    return names


def _read_legacy(checkpoint: str, top_level: Optional[Sequence[str]]) -> dict:
    from t5x import checkpoints

    state = checkpoints.load_t5x_checkpoint(checkpoint, lazy_parameters=True)
    names = _check_names(checkpoint, state["target"], top_level)
    return jax.tree_util.tree_map(lambda lazy: np.asarray(lazy.get(), np.float32),
                                  {name: state["target"][name] for name in names})


def write_initial_checkpoint(config, params: Mapping, model_dir: str, optimizer) -> str:
    """Writes `model_dir/checkpoint_0`: a t5x train state at step 0 holding `params` and fresh
    slots of `optimizer` (what t5x itself holds at step 0 of a run, with these parameters), and
    returns its path. `params` with a `profile_head` are the profile model's
    (models/profile_model.py).

    The T5X (msgpack) format is used because t5x restores it from `INITIAL_CHECKPOINT_PATH`
    without a dataset-iterator item, which a run that checkpoints its data position (Orbax
    `dataset`) would otherwise demand of an Orbax checkpoint. t5x writes it under a temporary
    name and renames it, so a killed write leaves nothing that looks complete.
    """
    from t5x import checkpoints
    from t5x import partitioning
    from t5x import train_state as train_state_lib

    from models import network
    from models import profile_model

    checkpoint = os.path.join(model_dir, "checkpoint_0")
    if _exists(checkpoint):
        raise FileExistsError("%s exists; choose a new output directory" % checkpoint)
    # With a profile head, the profile model's train state (its head's axes and slots too).
    module = (profile_model.ProfileAnkh3Transformer(config) if "profile_head" in params
              else network.Ankh3Transformer(config))
    tokens = jax.ShapeDtypeStruct((1, 8), np.int32)
    # Logical axis names only (no arrays are allocated): Adafactor factors its slots by them.
    params_axes = jax.eval_shape(
        lambda rng, x: module.init(rng, x, x, x, enable_dropout=False),
        jax.random.PRNGKey(0), tokens)["params_axes"]
    state = train_state_lib.FlaxOptimTrainState.create(
        optimizer, {"params": jax.tree_util.tree_map(np.asarray, dict(params)),
                    "params_axes": params_axes})
    partitioner = partitioning.PjitPartitioner(num_partitions=1)
    checkpoints.Checkpointer(state, partitioner, model_dir).save(state)
    return checkpoint
