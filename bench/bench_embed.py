"""Embedding throughput of the JAX path (models.embed) against the Hugging Face torch model, on the
same weights and the same FASTA; and the time `models.export_hf` takes.

    python bench/bench_embed.py                     # about 5 minutes on 2 cores
    python bench/bench_embed.py --proteins 200 --encoder_layers 4

Model: Ankh3-Large's per-layer shapes (d_model 1536, 16 heads x 64, d_ff 3840, gated-SiLU, 64
relative-position buckets), random weights, `--encoder_layers` encoder and `--decoder_layers`
decoder layers (default 2 and 2). It is exported once with `export_hf.export` (timed: the export
time of this 2-layer model, and its throughput in MB of float32 weights per second); both
paths then read that directory.

Input: the first `--proteins` records of the bundled UniRef50 sample (tests/data), read with
`models.embed.read_fasta`, longest cropped to `--max_length` residues.

Baseline: `transformers.T5EncoderModel` (torch, float32, `torch.no_grad`), the sequences sorted
by length and grouped into the same batches as the JAX path's, each batch padded to its longest
(the JAX path pads to the bucket length, and a partial batch to a power of two rows). Candidate: `models.embed.load_encoder(hf_dir=...).embed` (float32, length buckets,
jit). Each is warmed up on the whole set once (JAX compiles one program per bucket), then timed
over `--repeats` passes, alternating; the best pass of each counts. Printed: residues/s and
residues/s per core (cores = the CPUs this process may use), the ratio JAX / torch, and the
largest difference between the two paths' embeddings.
"""
import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from models import embed  # noqa: E402
from models import export_hf  # noqa: E402
from models import network  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                      "uniref50_sample.fasta.gz")


def large_shaped_config(encoder_layers: int, decoder_layers: int) -> network.Ankh3Config:
    return network.Ankh3Config(vocab_size=256, emb_dim=1536, num_heads=16, head_dim=64,
                               mlp_dim=3840, num_encoder_layers=encoder_layers,
                               num_decoder_layers=decoder_layers,
                               mlp_activations=("silu", "linear"), dtype="float32")


def random_params(config: network.Ankh3Config) -> dict:
    tokens = np.ones((1, 8), np.int32)
    variables = jax.jit(lambda rng: network.Ankh3Transformer(config).init(
        rng, tokens, tokens, tokens, enable_dropout=False))(jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(np.asarray, dict(variables["params"]))


def torch_embed(model, tokenizer, sequences, tokens_per_batch: int) -> list:
    """Per-residue embeddings by the HF model: [NLU] + residues + </s>, both rows dropped."""
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    outputs = [None] * len(sequences)
    batch = []

    def run(batch):
        encoded = tokenizer(["[NLU]" + sequences[i] for i in batch], return_tensors="pt",
                            padding=True)
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state.numpy()
        for row, i in enumerate(batch):
            outputs[i] = hidden[row, 1:1 + len(sequences[i])]

    batch_length = 0
    for i in order:
        length = embed.bucket_length(len(sequences[i]) + 2)
        capacity = 1 << (max(1, tokens_per_batch // length).bit_length() - 1)
        if batch and (length != batch_length or len(batch) == capacity):
            run(batch)
            batch = []
        batch.append(i)
        batch_length = length
    if batch:
        run(batch)
    return outputs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proteins", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--encoder_layers", type=int, default=2)
    parser.add_argument("--decoder_layers", type=int, default=2)
    parser.add_argument("--tokens_per_batch", type=int, default=embed.DEFAULT_TOKENS_PER_BATCH)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--input", default=SAMPLE)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoTokenizer, T5EncoderModel

    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    ids, sequences = embed.read_fasta(args.input)
    sequences = [s[:args.max_length] for s in sequences[:args.proteins]]
    residues = sum(map(len, sequences))
    config = large_shaped_config(args.encoder_layers, args.decoder_layers)
    params = random_params(config)
    weight_mb = sum(a.size for a in jax.tree_util.tree_leaves(params)) * 4 / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = os.path.join(tmp, "hf")
        start = time.perf_counter()
        export_hf.export(config, params, hf_dir)
        export_s = time.perf_counter() - start
        print("export of a %d+%d-layer model with Ankh3-Large per-layer shapes (%.0f MB float32):"
              " %.2f s, %.0f MB/s" % (args.encoder_layers, args.decoder_layers, weight_mb,
                                     export_s, weight_mb / export_s))

        encoder = embed.load_encoder(hf_dir=hf_dir, tokens_per_batch=args.tokens_per_batch)
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        model = T5EncoderModel.from_pretrained(hf_dir, dtype=torch.float32).eval()

        def run_jax():
            return encoder.embed(sequences, progress=False)

        def run_torch():
            return torch_embed(model, tokenizer, sequences, args.tokens_per_batch)

        ours, theirs = run_jax(), run_torch()  # warm-up (compilation)
        difference = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))
        times = {"jax": [], "torch": []}
        for _ in range(args.repeats):
            for name, run in (("jax", run_jax), ("torch", run_torch)):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)

    print("%d proteins, %d residues (cropped to %d), %d cores, tokens per batch %d"
          % (len(sequences), residues, args.max_length, cores, args.tokens_per_batch))
    rates = {}
    for name in ("torch", "jax"):
        best = min(times[name])
        rates[name] = residues / best
        print("%-5s best of %d: %.2f s  %8.0f residues/s  %8.0f residues/s per core"
              % (name, args.repeats, best, rates[name], rates[name] / cores))
    print("ratio JAX / torch (throughput): %.2f" % (rates["jax"] / rates["torch"]))
    print("max abs difference of the embeddings: %.2e" % difference)


if __name__ == "__main__":
    main()
