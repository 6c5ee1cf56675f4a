"""CPU training-step time of the project's network against t5x's example network, same dimensions.

    python bench/bench_network.py            # about 1-2 minutes on 2 cores
    python bench/bench_network.py --repeats 30 --num_encoder_layers 6

Baseline: `t5x.examples.t5.network.Transformer` (32 relative-position buckets, hard-coded).
Candidate: `models.network.Ankh3Transformer` with Ankh's 64 buckets / 128. Same width, depth, heads,
gated-SiLU MLP, untied logits, dropout 0, dtype. One step = forward + backward (loss and gradients
of the parameters), jit-compiled and warmed up; the two networks alternate step by step so that load
from other processes hits both alike. Prints the median step time of each and their ratio (goal:
<= 1.05).
"""

import argparse
import functools
import logging
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from t5x.examples.t5 import network as t5x_network

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from models import network  # noqa: E402


def _batch(batch_size: int, inputs_length: int, targets_length: int, seed: int = 0):
    """Full-length random residue ids (7..26), EOS-terminated, teacher-forced decoder inputs."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(7, 27, size=(batch_size, inputs_length), dtype=np.int32)
    targets = rng.integers(7, 27, size=(batch_size, targets_length), dtype=np.int32)
    inputs[:, -1] = targets[:, -1] = 1
    decoder_inputs = np.zeros_like(targets)
    decoder_inputs[:, 1:] = targets[:, :-1]
    return jnp.asarray(inputs), jnp.asarray(decoder_inputs), jnp.asarray(targets)


def _train_step(module):
    """jit-compiled (params, batch) -> (loss, grads) for a t5x-style encoder-decoder module."""

    def loss_fn(params, inputs, decoder_inputs, targets):
        logits = module.apply({"params": params}, inputs, decoder_inputs, targets,
                              enable_dropout=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    return jax.jit(jax.value_and_grad(loss_fn))


def _run_once(step, params, batch) -> float:
    start = time.perf_counter()
    loss, grads = step(params, *batch)
    jax.block_until_ready((loss, grads))
    return time.perf_counter() - start


def main(argv=None) -> None:
    """Builds both networks, warms them up, times alternating steps and prints the ratio."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emb_dim", type=int, default=256)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--mlp_dim", type=int, default=640)
    parser.add_argument("--num_encoder_layers", type=int, default=4)
    parser.add_argument("--num_decoder_layers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--inputs_length", type=int, default=128)
    parser.add_argument("--targets_length", type=int, default=64)
    parser.add_argument("--dtype", default="float32", help="activation dtype of both networks")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)

    dims = dict(vocab_size=256, dtype=args.dtype, emb_dim=args.emb_dim, num_heads=args.num_heads,
                head_dim=args.head_dim, mlp_dim=args.mlp_dim,
                num_encoder_layers=args.num_encoder_layers,
                num_decoder_layers=args.num_decoder_layers, mlp_activations=("silu", "linear"),
                dropout_rate=0.0, logits_via_embedding=False)
    modules = {
        "t5x example (32 buckets)": t5x_network.Transformer(t5x_network.T5Config(**dims)),
        "ankh3 (64 buckets)": network.Ankh3Transformer(network.Ankh3Config(
            **dims, relative_attention_num_buckets=64, relative_attention_max_distance=128)),
    }
    batch = _batch(args.batch_size, args.inputs_length, args.targets_length)
    steps, params = {}, {}
    for name, module in modules.items():
        init = jax.jit(functools.partial(module.init, enable_dropout=False))
        params[name] = init(jax.random.PRNGKey(0), *batch)["params"]
        steps[name] = _train_step(module)
        logging.info("%s: %s parameters; compiling and warming up", name,
                     f"{sum(x.size for x in jax.tree_util.tree_leaves(params[name])):,}")
        for _ in range(args.warmup):
            _run_once(steps[name], params[name], batch)

    times = {name: [] for name in modules}
    for repeat in range(args.repeats):
        for name in modules:
            times[name].append(_run_once(steps[name], params[name], batch))
        if (repeat + 1) % 5 == 0:
            logging.info("%d/%d steps timed", repeat + 1, args.repeats)

    print(f"Train step (forward + backward), batch {args.batch_size}, inputs "
          f"{args.inputs_length}, targets {args.targets_length}, emb {args.emb_dim}, "
          f"{args.num_encoder_layers}+{args.num_decoder_layers} layers, {args.num_heads} heads x "
          f"{args.head_dim}, mlp {args.mlp_dim}, {args.dtype}, {jax.device_count()} "
          f"{jax.default_backend()} device(s), {os.cpu_count()} CPU cores, "
          f"median of {args.repeats}:")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        spread = (min(times[name]), max(times[name]))
        print(f"  {name:26s} {median * 1e3:8.1f} ms  "
              f"(min {spread[0] * 1e3:.1f}, max {spread[1] * 1e3:.1f})")
    baseline, candidate = medians.values()
    print(f"ratio ankh3 / t5x example: {candidate / baseline:.3f}  (goal <= 1.05)")


if __name__ == "__main__":
    main()
