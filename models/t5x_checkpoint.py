"""Reading a network's parameters out of a t5x checkpoint, by name.

t5x (with Orbax, its default) writes `checkpoint_N/state`, an Orbax PyTree with
`target` (the model parameters) and `state` (step and optimizer slots). Reading by name
restores only the arrays asked for, so a 7 GB Ankh3-Large encoder loads without its decoder
or Adafactor state, and a checkpoint of a model with extra parameters (a head next to the
network) still gives the network's.
"""
import os
from typing import Mapping, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

STATE_ITEM = "state"


def _state_dir(checkpoint: str) -> str:
    state = os.path.join(checkpoint, STATE_ITEM)
    if not os.path.isdir(state) and not checkpoint.startswith("gs://"):
        raise FileNotFoundError(
            "%s is not a t5x checkpoint (no %s/ inside; pass a checkpoint_N directory)"
            % (checkpoint, STATE_ITEM))
    return state


def read_params(checkpoint: str, top_level: Optional[Sequence[str]] = None) -> dict:
    """The `target` parameters of a t5x checkpoint as nested dicts of numpy float32 arrays.

    Args:
        checkpoint: a `checkpoint_N` directory written by t5x (Orbax format).
        top_level: names of the top-level parameter collections to read (e.g.
            ("token_embedder", "encoder")); None reads all of them. Raises KeyError naming the
            checkpoint and what it holds when one is missing.
    """
    state = _state_dir(checkpoint)
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(state).item_metadata.tree
    target = metadata["target"]
    names = list(target) if top_level is None else list(top_level)
    missing = [name for name in names if name not in target]
    if missing:
        raise KeyError("%s holds no parameters %s (it has %s)"
                       % (checkpoint, missing, sorted(target)))
    wanted = {"target": {name: target[name] for name in names}}
    item = jax.tree_util.tree_map(lambda m: np.zeros(m.shape, m.dtype), wanted)
    restore_args = jax.tree_util.tree_map(
        lambda m: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    restored = checkpointer.restore(state, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), restored["target"])

