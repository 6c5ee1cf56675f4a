"""Parameter counts and training FLOPs of the model configs in gin/models/.

    python -m models.param_count                          # every model config in gin/models/
    python -m models.param_count gin/models/ankh3_xl.gin  # the named configs
    python -m models.param_count --flops                  # + FLOPs and run sizing on a TPU v4 slice
    python -m models.param_count --memory --gin_file=gin/runs/pretrain_ankh3_xl_tpu_v4.gin \
        --num_partitions=4 --num_devices=128            # bytes per device of a run (models/memory.py)

Parameter counts come from shape evaluation (`jax.eval_shape` of the network's `init`): no weight is
allocated, so the XL model counts in seconds on a laptop. FLOPs come from the closed-form count in
`forward_flops`, which tests/test_network_params.py checks against XLA's own count on a small model.
"""

import argparse
import dataclasses
import math
import pathlib
from typing import Mapping, Sequence

import gin
import jax
import jax.numpy as jnp

from models import network

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL_GIN_DIR = REPO_ROOT / "gin" / "models"
# Included by the model configs; not a model by itself.
SHARED_MODEL_GIN = "encoder_decoder.gin"

# Sizing defaults (BUILD.md, "Sizing a TPU v4 run"): the Ankh2 recipe on a v4-256 slice.
V4_PEAK_BF16_FLOPS_PER_CHIP = 275e12
V4_256_CHIPS = 128  # a v4-N slice has N TensorCores, two per chip
UNIREF50_RESIDUES = 17e9
UNIREF50_SEQUENCES = 60e6


@dataclasses.dataclass(frozen=True)
class ParameterCounts:
    """Parameters of one network, by part.

    Attributes:
        embedding: the input embedding, shared by encoder and decoder inputs.
        encoder: the encoder stack: layers, final norm, relative-position table.
        decoder: the decoder stack without the output projection.
        logits: the output projection (0 when tied to the embedding).
        relpos_table_shape: shape of the encoder's relative-position table, (heads, buckets).
    """

    embedding: int
    encoder: int
    decoder: int
    logits: int
    relpos_table_shape: tuple

    @property
    def encoder_with_embedding(self) -> int:
        """Encoder size as Hugging Face's `T5EncoderModel` reports it (the published figures)."""
        return self.encoder + self.embedding

    @property
    def total(self) -> int:
        """All parameters of the network."""
        return self.embedding + self.encoder + self.decoder + self.logits


def parameter_shapes(config: network.Ankh3Config) -> Mapping:
    """The network's parameter tree as `jax.ShapeDtypeStruct`s; no weight is allocated."""
    module = network.Ankh3Transformer(config)
    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)

    def init(rng, encoder_tokens, decoder_tokens):
        return module.init(rng, encoder_tokens, decoder_tokens, decoder_tokens,
                           enable_dropout=False)

    variables = jax.eval_shape(init, jax.random.PRNGKey(0), tokens, tokens)
    return variables["params"]


def _size(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def count_parameters(config: network.Ankh3Config) -> ParameterCounts:
    """Counts the parameters of the network `config` describes, by shape evaluation."""
    params = parameter_shapes(config)
    decoder = dict(params["decoder"])
    logits = decoder.pop("logits_dense", {})
    return ParameterCounts(
        embedding=_size(params["token_embedder"]),
        encoder=_size(params["encoder"]),
        decoder=_size(decoder),
        logits=_size(logits),
        relpos_table_shape=tuple(params["encoder"]["relpos_bias"]["rel_embedding"].shape),
    )


def network_config_from_gin(gin_file: str) -> network.Ankh3Config:
    """The `Ankh3Config` a model gin file binds. Clears gin's global config before and after."""
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO_ROOT))
    try:
        gin.parse_config_file(gin_file)
        return gin.get_configurable(network.Ankh3Transformer)().config
    finally:
        gin.clear_config()


def forward_flops(config: network.Ankh3Config, inputs_length: int, targets_length: int) -> dict:
    """Forward-pass FLOPs of one example (a multiply-add counts 2), by where they are spent.

    Counted: every matrix multiplication with a weight (6 x parameters per token for training,
    the usual estimate), plus the attention score and mixing products (QK^T and AV, 2 x 2 x
    length x heads x head_dim per token and layer, over the full padded length as t5x computes
    them). Not counted: the input-embedding lookup (a gather in principle; t5x's one-hot
    formulation costs 2 x vocab x emb_dim per token more), norms, softmax, the relative-position
    bias (a (heads x buckets) table contraction per stack) and elementwise work: together under
    1 % for the Ankh3 models.

    Returns:
        dict with `encoder_per_token` (encoder stack, plus the decoder's cross-attention key/value
        projections of that encoder token), `decoder_per_token` (decoder stack with its attention
        to the encoder and the output projection) and `per_example`.
    """
    d, inner, mlp = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
    mlp_matrices = len(config.mlp_activations) + 1
    self_attention_projections = 4 * d * inner  # query, key, value, output
    mlp_projections = mlp_matrices * d * mlp

    encoder_per_token = config.num_encoder_layers * 2 * (
        self_attention_projections + mlp_projections + 2 * inputs_length * inner)
    # The decoder projects every encoder output to keys and values once per decoder layer.
    encoder_per_token += config.num_decoder_layers * 2 * 2 * d * inner

    decoder_per_token = config.num_decoder_layers * 2 * (
        self_attention_projections + 2 * d * inner + mlp_projections
        + 2 * targets_length * inner + 2 * inputs_length * inner)
    decoder_per_token += 2 * d * config.vocab_size  # output projection

    return {
        "encoder_per_token": encoder_per_token,
        "decoder_per_token": decoder_per_token,
        "per_example": inputs_length * encoder_per_token + targets_length * decoder_per_token,
    }


def size_training_run(config: network.Ankh3Config, inputs_length: int, targets_length: int,
                      batch_size: int, chips: int, peak_flops_per_chip: float, mfu: float) -> dict:
    """Training FLOPs (3 x forward: the backward pass costs twice the forward) and step time.

    The epoch figures assume every UniRef50 residue is fed once through the encoder input:
    `epoch_steps_packed` with examples fully packed (about `inputs_length` residues per example,
    a lower bound), `epoch_steps_unpacked` with one sequence per example (an upper bound, long
    sequences cropped).
    """
    forward = forward_flops(config, inputs_length, targets_length)
    flops = {name: 3 * value for name, value in forward.items()}
    step_flops = batch_size * flops["per_example"]
    step_seconds = step_flops / (chips * peak_flops_per_chip * mfu)
    epoch_steps_packed = UNIREF50_RESIDUES / (batch_size * inputs_length)
    epoch_steps_unpacked = UNIREF50_SEQUENCES / batch_size
    return {
        "train_flops_per_encoder_token": flops["encoder_per_token"],
        "train_flops_per_decoder_token": flops["decoder_per_token"],
        "train_flops_per_example": flops["per_example"],
        "train_flops_per_step": step_flops,
        "step_seconds": step_seconds,
        "tokens_per_second": batch_size * (inputs_length + targets_length) / step_seconds,
        "examples_per_second": batch_size / step_seconds,
        "epoch_steps_packed": epoch_steps_packed,
        "epoch_hours_packed": epoch_steps_packed * step_seconds / 3600,
        "epoch_steps_unpacked": epoch_steps_unpacked,
        "epoch_hours_unpacked": epoch_steps_unpacked * step_seconds / 3600,
    }


def model_gin_files() -> list:
    """The model configs in gin/models/: the files that set the network's dimensions, without
    the shared file they include and the overlays included after one (e.g. profile.gin)."""
    return sorted(str(path.relative_to(REPO_ROOT)) for path in MODEL_GIN_DIR.glob("*.gin")
                  if path.name != SHARED_MODEL_GIN and "network.Ankh3Config:" in path.read_text())


def _print_counts(names: Sequence[str], counts: Sequence[ParameterCounts]) -> None:
    header = ("config", "encoder", "encoder+embedding", "decoder", "embedding", "logits", "total",
              "relpos table")
    rows = [header]
    for name, count in zip(names, counts):
        rows.append((name, *(f"{value:,}" for value in (
            count.encoder, count.encoder_with_embedding, count.decoder, count.embedding,
            count.logits, count.total)), "x".join(map(str, count.relpos_table_shape))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))


def _print_sizing(names: Sequence[str], configs: Sequence[network.Ankh3Config],
                  counts: Sequence[ParameterCounts], args) -> None:
    print(f"\nTraining cost at inputs length {args.inputs_length}, targets length "
          f"{args.targets_length}, batch {args.batch_size}, on {args.chips} chips x "
          f"{args.peak_tflops:g} TFLOP/s at {args.mfu:.0%} MFU (UniRef50: "
          f"{UNIREF50_RESIDUES:.3g} residues, {UNIREF50_SEQUENCES:.3g} sequences)")
    for name, config, count in zip(names, configs, counts):
        sizing = size_training_run(config, args.inputs_length, args.targets_length, args.batch_size,
                                   args.chips, args.peak_tflops * 1e12, args.mfu)
        print(f"{name}: {count.total * 4 / 2**30:.1f} GiB of float32 parameters")
        print(f"  training FLOPs per encoder token {sizing['train_flops_per_encoder_token']:.4g}, "
              f"per decoder token {sizing['train_flops_per_decoder_token']:.4g}, "
              f"per example {sizing['train_flops_per_example']:.4g}, "
              f"per step {sizing['train_flops_per_step']:.4g}")
        print(f"  step {sizing['step_seconds']:.4g} s, {sizing['tokens_per_second']:,.0f} tokens/s "
              f"(encoder + decoder), {sizing['examples_per_second']:,.0f} examples/s")
        print(f"  one epoch: {sizing['epoch_steps_packed']:,.0f} steps / "
              f"{sizing['epoch_hours_packed']:.2f} h packed, "
              f"{sizing['epoch_steps_unpacked']:,.0f} steps / "
              f"{sizing['epoch_hours_unpacked']:.2f} h one sequence per example")


def main(argv: Sequence[str] = None) -> None:
    """Command line entry point: prints the counts (and with --flops the sizing) of each config."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gin_files", nargs="*",
                        help="model gin files (default: every model config in gin/models/)")
    parser.add_argument("--flops", action="store_true",
                        help="also print training FLOPs and run sizing")
    parser.add_argument("--inputs_length", type=int, default=512)
    parser.add_argument("--targets_length", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--chips", type=int, default=V4_256_CHIPS)
    parser.add_argument("--peak_tflops", type=float, default=V4_PEAK_BF16_FLOPS_PER_CHIP / 1e12,
                        help="peak bfloat16 TFLOP/s per chip")
    parser.add_argument("--mfu", type=float, default=0.5, help="model FLOPs utilisation")
    parser.add_argument("--memory", action="store_true",
                        help="print bytes per device of the run --gin_file configures instead")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="with --memory: a T5X run config (repeatable, as for t5x.train)")
    parser.add_argument("--gin_binding", action="append", default=[],
                        help="with --memory: a gin binding applied after the files")
    parser.add_argument("--num_partitions", default="1",
                        help="with --memory: model-parallel size(s), comma-separated")
    parser.add_argument("--num_devices", default=str(V4_256_CHIPS),
                        help="with --memory: device (TPU v4 chip) count(s), comma-separated")
    args = parser.parse_args(argv)
    if args.memory:
        if not args.gin_file or args.gin_files:
            parser.error("--memory takes --gin_file=RUN_CONFIG and no model gin files")
        from absl import logging  # pylint: disable=import-outside-toplevel
        from models import memory  # pylint: disable=import-outside-toplevel
        logging.set_verbosity(logging.ERROR)  # t5x's Adafactor warns once per parameter
        memory.print_memory_table(args.gin_file,
                                  [int(n) for n in args.num_partitions.split(",")],
                                  [int(n) for n in args.num_devices.split(",")],
                                  args.gin_binding)
        return

    gin_files = args.gin_files or model_gin_files()
    names, configs, counts = [], [], []
    for gin_file in gin_files:
        config = network_config_from_gin(gin_file)
        names.append(pathlib.Path(gin_file).stem)
        configs.append(config)
        counts.append(count_parameters(config))
    _print_counts(names, counts)
    if args.flops:
        _print_sizing(names, configs, counts, args)


if __name__ == "__main__":
    main()
