"""Per-residue and mean-pooled encoder embeddings of proteins, in JAX, and their command line.

    python -m models.embed --checkpoint=MODEL_DIR/checkpoint_N --gin_file=gin/models/tiny.gin \\
        --input=proteins.fasta --output=embeddings.npz
    python -m models.embed --hf_dir=EXPORTED_DIR --input=proteins.fasta --output=embeddings.npz

The encoder reads `[NLU]` + residues + `</s>`, Ankh3's embedding mode (the denoising prefix);
the rows of the prefix and of `</s>` are dropped, so a protein of L residues gives an [L, d_model]
float32 array, and its mean-pooled embedding is that array's mean over residues.

Sequences are sorted by length and padded to a few bucket lengths (powers of two and 1.5 times
them), in batches of a power of two sequences of at most `tokens_per_batch` tokens, so that XLA
compiles few programs per bucket and padding stays under a third. Padding does not change the embeddings: padded keys are masked
and relative-position biases depend only on offsets.

Long sequences: a protein longer than `window` residues is embedded in windows of `window`
residues that overlap by `overlap` residues, each window encoded as its own `[NLU]...</s>` input;
every residue takes its embedding from the window in which it lies farthest from a cut (the
overlaps are split at their middle), so each kept row saw at least `overlap / 2` residues of context
on either side of it. With `window=None` every protein is encoded whole (memory grows with the
square of its length).

The output file (`.npz`, read with `numpy.load`): `ids` (record ids, input order), `lengths`,
`mean` [N, d_model], and the per-residue arrays concatenated as `residues` [sum of lengths, d_model]
with `offsets` [N + 1]: protein i is `residues[offsets[i]:offsets[i + 1]]`.

A checkpoint (or export) of the profile model (models/profile_model.py) embeds like any other:
its encoder is the network's. With `--profiles` the output also holds `profiles` [sum of lengths,
20]: each residue's predicted profile, the softmax of the profile head on its embedding (the
classes in HMMER's order ACDEFGHIKLMNPQRSTVWY), rows as in `residues`.
"""
import argparse
import dataclasses
import functools
import json
import os
import sys
from typing import Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from models import hf_t5
from models import network
from models import param_count
from models import t5x_checkpoint
from pipelines import fasta
from pipelines import records
from tasks import vocabulary

# The parameters the encoder reads; a checkpoint may hold more (decoder, heads, ...).
ENCODER_PARAMS = ("token_embedder", "encoder")
PROFILE_HEAD = "profile_head"
DEFAULT_TOKENS_PER_BATCH = 16384
# Ankh2/Ankh3 were trained on 512-token crops; past a few relative-position max distances (128)
# every offset shares the last bucket, so windows of 1024 lose little and bound the memory.
DEFAULT_WINDOW = 1024
DEFAULT_OVERLAP = 256
_MIN_BUCKET = 16
# Token ids of the residue letters (bytes) in the 256-id vocabulary; the input is validated first.
_RESIDUE_IDS = np.full(256, -1, np.int32)
for _letter in records.ALPHABET:
    (_RESIDUE_IDS[_letter],) = vocabulary.ProteinVocabulary().encode(chr(_letter))
_NLU_ID = vocabulary.ProteinVocabulary().encode(vocabulary.NLU_PREFIX)[0]
_EOS_ID = vocabulary.ProteinVocabulary().eos_id
# Any length passes; windows handle long proteins.
_RULES = records.Rules(non_canonical=records.KEEP, min_length=1, max_length=sys.maxsize)


def bucket_length(tokens: int) -> int:
    """The padded length for `tokens`: the smallest power of two, or 1.5 times one, >= tokens."""
    length = _MIN_BUCKET
    while True:
        if tokens <= length:
            return length
        if tokens <= length * 3 // 2:
            return length * 3 // 2
        length *= 2


def windows(length: int, window: Optional[int], overlap: int) -> list[tuple[int, int, int, int]]:
    """How a protein of `length` residues is cut: (start, stop, keep_start, keep_stop) per window.

    Window k encodes residues [start, stop) and contributes rows [keep_start, keep_stop) (protein
    coordinates); the kept ranges tile [0, length) exactly.
    """
    if window is None or length <= window:
        return [(0, length, 0, length)]
    stride = window - overlap
    starts = list(range(0, length - window, stride)) + [length - window]
    cuts = [0] + [(starts[k] + window + starts[k + 1]) // 2 for k in range(len(starts) - 1)]
    cuts.append(length)
    return [(start, start + window, cuts[k], cuts[k + 1]) for k, start in enumerate(starts)]


class Encoder:
    """The encoder of a network with its parameters, turning sequences into embeddings.

    Attributes:
        config: the network config (activation dtype as given to the constructor).
        params: the embedding and encoder parameters.
        d_model: width of the embeddings.
        tokens_per_batch: padded tokens per batch (memory grows with it).
        window, overlap: the long-sequence policy (module docstring); window None: no windows.
        profile_head: the profile model's head kernel [d_model, 20] (params' `profile_head`),
            or None.
    """

    def __init__(self, config: network.Ankh3Config, params, *, dtype: str = "float32",
                 tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH,
                 window: Optional[int] = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP):
        if window is not None and not 0 <= overlap < window:
            raise ValueError("overlap must be in [0, window), got overlap=%d window=%d"
                             % (overlap, window))
        self.config = dataclasses.replace(config, dtype=dtype, dropout_rate=0.0)
        self.d_model = config.emb_dim
        self.tokens_per_batch = tokens_per_batch
        self.window = window
        self.overlap = overlap
        missing = [name for name in ENCODER_PARAMS if name not in params]
        if missing:
            raise KeyError("encoder parameters %s missing (have %s)" % (missing, sorted(params)))
        self.params = jax.device_put({name: params[name] for name in ENCODER_PARAMS})
        self.profile_head = (np.asarray(params[PROFILE_HEAD]["kernel"], np.float32)
                             if PROFILE_HEAD in params else None)
        self._encode = _compiled_encoder(self.config)

    def profiles(self, embeddings: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The predicted profiles [L, 20] (softmax of the profile head) of `embed`'s arrays;
        ValueError when the parameters had no profile head."""
        if self.profile_head is None:
            raise ValueError("these parameters have no profile head (not a profile model)")
        outputs = []
        for embedding in embeddings:
            logits = embedding @ self.profile_head
            logits -= logits.max(axis=-1, keepdims=True)
            weights = np.exp(logits)
            outputs.append((weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32))
        return outputs

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """[batch, length] token ids (0 = padding) -> [batch, length, d_model] float32."""
        return np.asarray(self._encode(self.params, jnp.asarray(tokens, jnp.int32)))

    def embed(self, sequences: Sequence[str], *, progress: bool = True) -> list[np.ndarray]:
        """Per-residue float32 encoder embeddings, one [len(seq), d_model] array per sequence, in
        input order; the [NLU] prefix and EOS are excluded. Batched by length. Mean pooling is
        arr.mean(0).

        Sequences are normalized residue letters (the 20 canonical, X, B, Z, U, O); anything
        else raises ValueError naming the sequence and the character.
        """
        residues = [_residue_ids(sequence, index) for index, sequence in enumerate(sequences)]
        # One piece per window: (protein, piece start, piece stop, kept range).
        pieces = [(i, *cut) for i, ids in enumerate(residues)
                  for cut in windows(len(ids), self.window, self.overlap)]
        outputs = [np.empty((len(ids), self.d_model), np.float32) for ids in residues]
        bar = tqdm.tqdm(total=sum(len(ids) for ids in residues), unit="res", disable=not progress,
                        file=sys.stderr, desc="embedding")
        for batch in self._batches(pieces):
            length = bucket_length(max(stop - start for _, start, stop, _, _ in batch) + 2)
            # A partial batch is padded to a power of two rows: few distinct shapes to compile.
            rows = 1 << max(0, len(batch) - 1).bit_length()
            tokens = np.zeros((rows, length), np.int32)
            for row, (i, start, stop, _, _) in enumerate(batch):
                tokens[row, 0] = _NLU_ID
                tokens[row, 1:1 + stop - start] = residues[i][start:stop]
                tokens[row, 1 + stop - start] = _EOS_ID
            encoded = self.encode_tokens(tokens)
            for row, (i, start, _, keep_start, keep_stop) in enumerate(batch):
                first = 1 + keep_start - start  # row 0 is [NLU]
                kept = keep_stop - keep_start
                outputs[i][keep_start:keep_stop] = encoded[row, first:first + kept]
            bar.update(sum(keep_stop - keep_start for _, _, _, keep_start, keep_stop in batch))
        bar.close()
        return outputs

    def _batches(self, pieces) -> Iterator[list]:
        """Pieces sorted by length, grouped into batches of one bucket length each, of a power
        of two pieces (at most tokens_per_batch tokens) but the last of each bucket."""
        pieces = sorted(pieces, key=lambda p: p[2] - p[1])
        batch, batch_length = [], 0
        for piece in pieces:
            length = bucket_length(piece[2] - piece[1] + 2)
            capacity = 1 << (max(1, self.tokens_per_batch // length).bit_length() - 1)
            if batch and (length != batch_length or len(batch) == capacity):
                yield batch
                batch = []
            batch.append(piece)
            batch_length = length
        if batch:
            yield batch


@functools.lru_cache(maxsize=None)
def _compiled_encoder(config: network.Ankh3Config):
    """params, [batch, length] tokens -> float32 encodings; one jit per config, so encoders of
    one network (e.g. with other window settings) share compiled programs."""
    module = network.Ankh3Transformer(config)

    def encode(params, tokens):
        encoded = module.apply({"params": params}, tokens, enable_dropout=False,
                               method=network.Ankh3Transformer.encode)
        return encoded.astype(jnp.float32)

    return jax.jit(encode)


def _residue_ids(sequence: str, index: int) -> np.ndarray:
    data = sequence.encode("utf-8") if isinstance(sequence, str) else bytes(sequence)
    checked = records.check_sequence(data, _RULES)
    if isinstance(checked, tuple):
        reason, detail, excerpt = checked
        raise ValueError("sequence %d: %s (%s): %s" % (index, reason, detail, excerpt))
    return _RESIDUE_IDS[np.frombuffer(checked, np.uint8)]


def _random_encoder_params(config: network.Ankh3Config, seed: int) -> dict:
    """Freshly initialised embedding and encoder parameters (the network's own initialisers)."""
    module = network.Ankh3Transformer(config)
    tokens = jnp.ones((1, 8), jnp.int32)
    variables = jax.jit(lambda rng: module.init(
        rng, tokens, enable_dropout=False, method=network.Ankh3Transformer.encode))(
            jax.random.PRNGKey(seed))
    return jax.tree_util.tree_map(np.asarray, dict(variables["params"]))


def read_hf_encoder(hf_dir: str) -> tuple[network.Ankh3Config, dict]:
    """Network config and encoder parameters (and the profile head, when the export has one)
    from an HF T5 directory (config.json and model.safetensors, as `models.export_hf` writes
    them)."""
    from safetensors.numpy import load_file

    with open(os.path.join(hf_dir, "config.json")) as f:
        hf_config = json.load(f)
    config = hf_t5.network_config(hf_config)
    weights = os.path.join(hf_dir, "model.safetensors")
    if not os.path.exists(weights):
        raise FileNotFoundError("%s has no model.safetensors" % hf_dir)
    params = hf_t5.from_hf_state_dict(config, load_file(weights), encoder_only=True,
                                      source=weights)
    profile_head = hf_t5.read_profile_head(hf_dir, hf_config, config)
    if profile_head is not None:
        params[PROFILE_HEAD] = profile_head
    return config, params


def load_encoder(*, checkpoint: Optional[str] = None, gin_file: Optional[str] = None,
                 hf_dir: Optional[str] = None, random_seed: Optional[int] = None,
                 **encoder_options) -> Encoder:
    """Exactly one source: checkpoint (+ gin_file naming the model gin), hf_dir (an export_hf
    directory), or gin_file + random_seed (the same network with freshly initialised random
    weights, for the probes' random-weights baseline).

    The network config is read from the gin file's `network.Ankh3Config` bindings, and from a
    checkpoint only the embedding and encoder parameters are read, by name (and the profile
    head, when the checkpoint has one): the decoder is ignored. `encoder_options` go to
    `Encoder` (dtype, tokens_per_batch, window, overlap).
    """
    if hf_dir is not None:
        if checkpoint is not None or gin_file is not None or random_seed is not None:
            raise ValueError("hf_dir excludes checkpoint, gin_file and random_seed")
        config, params = read_hf_encoder(hf_dir)
        return Encoder(config, params, **encoder_options)
    if gin_file is None:
        raise ValueError("give checkpoint and gin_file, hf_dir, or gin_file and random_seed")
    if (checkpoint is None) == (random_seed is None):
        raise ValueError("with gin_file, give exactly one of checkpoint and random_seed")
    config = param_count.network_config_from_gin(gin_file)
    if checkpoint is not None:
        wanted = ENCODER_PARAMS + ((PROFILE_HEAD,) if PROFILE_HEAD in
                                   t5x_checkpoint.top_level_names(checkpoint) else ())
        params = t5x_checkpoint.read_params(checkpoint, wanted)
    else:
        params = _random_encoder_params(config, random_seed)
    return Encoder(config, params, **encoder_options)


def read_fasta(path: str) -> tuple[list[str], list[str]]:
    """Ids and normalized sequences of a FASTA file (plain or compressed, local or gs://), in
    file order.

    Records are read, parsed and validated by the data pipeline's own functions
    (`pipelines.fasta.read_fasta`, `pipelines.records.check_record`; non-canonical residues
    kept, any length). A record that fails raises ValueError naming the file, the record and the
    reason; so does an id that occurs twice, since the output is looked up by id.
    """
    ids, sequences, seen = [], [], {}
    for number, raw in enumerate(fasta.read_fasta(path), 1):
        checked = records.check_record(raw, _RULES)
        if isinstance(checked, records.Rejected):
            if checked.id is None:
                raise ValueError("%s: record %d: %s: %s" % (
                    path, number, checked.detail, checked.excerpt))
            raise ValueError("%s: record %d (%s): %s, %s: %s" % (
                path, number, checked.id, checked.reason, checked.detail, checked.excerpt))
        if checked.id in seen:
            raise ValueError("%s: record %d: id %s also names record %d"
                             % (path, number, checked.id, seen[checked.id]))
        seen[checked.id] = number
        ids.append(checked.id)
        sequences.append(checked.sequence.decode("ascii"))
    return ids, sequences


def write_npz(path: str, ids: Sequence[str], embeddings: Sequence[np.ndarray],
              profiles: Optional[Sequence[np.ndarray]] = None) -> None:
    """Writes the embeddings file (module docstring), under a temporary name, then renamed;
    with `profiles` (one [L, 20] array per protein), their `profiles` array too."""
    extra = {}
    if profiles is not None:
        extra["profiles"] = (np.concatenate(profiles).astype(np.float32) if len(profiles)
                             else np.zeros((0, 20), np.float32))
    lengths = np.array([len(e) for e in embeddings], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    d_model = embeddings[0].shape[1] if embeddings else 0
    residues = (np.concatenate(embeddings) if embeddings
                else np.zeros((0, d_model), np.float32))
    mean = np.stack([e.mean(0) for e in embeddings]) if embeddings else residues[:0]
    temporary = path + ".tmp-%d" % os.getpid()
    with open(temporary, "wb") as f:
        np.savez(f, ids=np.array(list(ids), dtype=str), lengths=lengths, offsets=offsets,
                 mean=mean.astype(np.float32), residues=residues.astype(np.float32), **extra)
    os.replace(temporary, path)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: FASTA in, embeddings file out (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="t5x checkpoint_N directory (with --gin_file)")
    parser.add_argument("--gin_file", help="the model gin of the checkpoint")
    parser.add_argument("--hf_dir", help="a Hugging Face T5 directory (models.export_hf)")
    parser.add_argument("--random_seed", type=int,
                        help="with --gin_file: random weights (a baseline), not a checkpoint")
    parser.add_argument("--input", required=True, help="FASTA file (plain or .gz)")
    parser.add_argument("--output", required=True, help="output .npz")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="activation dtype (parameters stay float32; output is float32)")
    parser.add_argument("--tokens_per_batch", type=int, default=DEFAULT_TOKENS_PER_BATCH)
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                        help="longest protein encoded whole; 0: no windows")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                        help="residues shared by consecutive windows")
    parser.add_argument("--profiles", action="store_true",
                        help="also write each residue's predicted profile (a profile model's "
                             "checkpoint or export)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.output.endswith(".npz"):
        parser.error("--output must end in .npz")
    encoder = load_encoder(checkpoint=args.checkpoint, gin_file=args.gin_file,
                           hf_dir=args.hf_dir, random_seed=args.random_seed, dtype=args.dtype,
                           tokens_per_batch=args.tokens_per_batch,
                           window=args.window or None, overlap=args.overlap)
    ids, sequences = read_fasta(args.input)
    if args.profiles and encoder.profile_head is None:
        parser.error("--profiles needs a profile model's checkpoint or export (no profile_head)")
    embeddings = encoder.embed(sequences, progress=not args.no_progress)
    write_npz(args.output, ids, embeddings,
              encoder.profiles(embeddings) if args.profiles else None)
    print("%d proteins, %d residues, d_model %d -> %s"
          % (len(ids), sum(map(len, sequences)), encoder.d_model, args.output))


if __name__ == "__main__":
    main()
