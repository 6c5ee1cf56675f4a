"""SeqIO preprocessors for the Ankh3 objectives: tokenization, cropping, denoising, completion.

Two kinds of functions live here:
- tensor functions (`crop_window`, `draw_mask`, `cap_mask`, `denoise_with_mask`, `cut_point`,
  `complete_at`) that work on one protein's ids and take every random choice as an argument or
  a stateless seed, so tests can pin them down (the model card's example is `denoise_with_mask`
  with explicit positions);
- dataset preprocessors (`normalize_sequence`, `tokenize_residues` before seqio's
  `CacheDatasetPlaceholder`; `denoise`, `complete` after it) that seqio calls with
  `sequence_length` and `output_features`.

Randomness is stateless: `seqio.map_over_dataset(num_seeds=1)` hands each example a seed derived
from the seed of `Task.get_dataset` (T5X's `DatasetConfig.seed`), and each task adds its own
`seed_salt` to it, so that the tasks of a mixture, which seqio gives the same seed, draw
different crops and masks. Proteins are never concatenated: one protein makes one example.
The per-example work is kept to few tf ops (see bench/bench_tasks.py): the crop, mask and cap
seeds are the salted seed plus a constant offset (stateless ops hash their seed through Philox
before use, so such seeds give unrelated streams, unlike a split, which costs a draw of its
own), and the overflow count comes from the drawn count alone.

Length accounting (I = inputs length, T = targets length, EOS appended by
`seqio.preprocessors.append_eos_after_trim` right after the objective):
- denoising: inputs = `[NLU]` + crop + EOS, so the crop has at most I - 2 residues; targets =
  2 ids per masked residue + EOS, so at most (T - 1) // 2 residues are masked.
- completion: inputs = `[S2S]` + head + EOS <= I and targets = tail + EOS <= T, so the crop has
  at most min((I - 2) / f_max, (T - 1) / (1 - f_min)) residues for cut fractions in
  [f_min, f_max].
"""
import logging
import math
from typing import Mapping, Optional, Sequence

import seqio
import tensorflow as tf

RANDOM_CROP = "random"
START_CROP = "start"
CROP_POLICIES = (RANDOM_CROP, START_CROP)
# A warning is logged when the budget of masked residues is below the expected count plus this
# many standard deviations (the excess is unmasked, see `cap_mask`).
_OVERFLOW_WARNING_SIGMAS = 4.0
# Added to an example's salted seed to seed its mask and cut draws (the crop uses the seed itself).
_MASK_SEED_OFFSET = (1, 0)
_CAP_SEED_OFFSET = (2, 0)
_CUT_SEED_OFFSET = (1, 0)


def single_token_id(vocabulary: seqio.Vocabulary, token: str) -> int:
    """The id of `token` (a task prefix such as `[NLU]`), which must encode to exactly one id."""
    ids = list(vocabulary.encode(token))
    if len(ids) != 1 or ids[0] == vocabulary.unk_id:
        raise ValueError(
            "%s encodes %r as %s; the Ankh3 tasks need it to be one known id (for a "
            "SentencePiece model: a user-defined symbol, trained with add_dummy_prefix=false)"
            % (vocabulary, token, ids))
    return ids[0]


def num_sentinels(vocabulary: seqio.Vocabulary) -> int:
    """How many sentinels the vocabulary has: `<extra_id_k>` is id `vocab_size - 1 - k`."""
    if not vocabulary.extra_ids:
        raise ValueError(
            "%s has no extra ids, so no sentinels for denoising; give it extra_ids" % vocabulary)
    return vocabulary.extra_ids


def mask_budget(vocabulary: seqio.Vocabulary,
                sequence_length: Optional[Mapping[str, int]]) -> int:
    """The most residues one denoising example may mask: one sentinel each, and the targets
    (sentinel + residue per masked residue, then EOS) must fit their length."""
    budget = num_sentinels(vocabulary)
    if sequence_length and sequence_length.get("targets"):
        budget = min(budget, (sequence_length["targets"] - 1) // 2)
    return budget


def denoising_max_residues(sequence_length: Optional[Mapping[str, int]]) -> Optional[int]:
    """The longest crop for denoising: `[NLU]` + residues + EOS fit the inputs length."""
    if not sequence_length or not sequence_length.get("inputs"):
        return None
    return sequence_length["inputs"] - 2


def completion_max_residues(sequence_length: Optional[Mapping[str, int]],
                            cut_fractions: Sequence[float]) -> Optional[int]:
    """The longest crop for completion such that any cut fraction in the range fits both
    `[S2S]` + head + EOS in the inputs and tail + EOS in the targets."""
    if not sequence_length or not sequence_length.get("inputs") or not sequence_length.get(
            "targets"):
        return None
    low, high = cut_fractions
    return min(math.floor((sequence_length["inputs"] - 2) / high),
               math.floor((sequence_length["targets"] - 1) / (1.0 - low)))


def check_cut_fractions(cut_fractions: Sequence[float]) -> tuple[float, float]:
    """Validates a completion cut range (low, high) with 0 < low <= high < 1."""
    if len(cut_fractions) != 2 or not 0.0 < cut_fractions[0] <= cut_fractions[1] < 1.0:
        raise ValueError("cut fractions must be (low, high) with 0 < low <= high < 1, got %r"
                         % (cut_fractions,))
    return float(cut_fractions[0]), float(cut_fractions[1])


def crop_window(residues: tf.Tensor, max_residues: Optional[int], policy: str,
                seed: tf.Tensor) -> tf.Tensor:
    """At most `max_residues` consecutive residues: a uniformly random window (`random`) or the
    first ones (`start`). Sequences that fit are returned whole."""
    if policy not in CROP_POLICIES:
        raise ValueError("crop policy must be one of %s, got %r" % (CROP_POLICIES, policy))
    if max_residues is None:
        return residues
    length = tf.size(residues)
    if policy == START_CROP:
        return residues[:max_residues]
    excess = tf.maximum(length - max_residues, 0)
    offset = tf.random.stateless_uniform([], seed, minval=0, maxval=excess + 1, dtype=tf.int32)
    return residues[offset:offset + max_residues]


def draw_mask(length: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """Independent per-residue masking: a bool vector, each position True with `probability`."""
    return tf.random.stateless_uniform([length], seed) < probability


def cap_mask(mask: tf.Tensor, budget: int, seed: tf.Tensor) -> tf.Tensor:
    """Unmasks masked positions chosen uniformly at random until at most `budget` remain.

    A sentinel is never reused and never taken from the residue ids; the excess of a sequence
    that draws more masked residues than sentinels (or target room) is left as plain residues.
    """
    def unmask_excess():
        scores = tf.where(mask, tf.random.stateless_uniform(tf.shape(mask), seed), 2.0)
        rank = tf.argsort(tf.argsort(scores))
        return mask & (rank < budget)

    # The sort is skipped in the common case, where the mask fits.
    return tf.cond(tf.reduce_sum(tf.cast(mask, tf.int32)) > budget, unmask_excess, lambda: mask)


def denoise_with_mask(residues: tf.Tensor, mask: tf.Tensor, prefix_id: int,
                      vocabulary_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The `[NLU]` example for explicit mask positions (EOS not yet appended).

    inputs: prefix, then the residues with the k-th masked one replaced by `<extra_id_k>`;
    targets: `<extra_id_k>` followed by the residue it hides, for each masked residue in order.
    """
    mask = tf.cast(mask, tf.bool)
    # `<extra_id_k>` is id vocabulary_size - 1 - k (T5's convention: counting down), and the
    # k-th masked residue has k + 1 masked residues up to and including it.
    sentinels = vocabulary_size - tf.cumsum(tf.cast(mask, tf.int32))
    corrupted = tf.where(mask, sentinels, residues)
    # (sentinel, residue) rows of the masked positions, flattened in order.
    pairs = tf.gather_nd(tf.stack([corrupted, residues], axis=1), tf.where(mask))
    inputs = tf.concat([[prefix_id], corrupted], axis=0)
    return inputs, tf.reshape(pairs, [-1])


def cut_point(length: tf.Tensor, cut_fractions: tuple[float, float],
              sequence_length: Optional[Mapping[str, int]], seed: tf.Tensor) -> tf.Tensor:
    """Where completion splits a crop of `length` residues: floor(f * length) for f uniform in
    `cut_fractions` (as the Ankh3 card's `int(len(seq) * 0.5)` for f = 0.5), kept in
    [1, length - 1] so that both parts have a residue, and moved (by at most one residue after
    `completion_max_residues` cropping) so that both parts fit their feature lengths."""
    low, high = cut_fractions
    fraction = tf.random.stateless_uniform([], seed, minval=low, maxval=high) if high > low \
        else tf.constant(low)
    cut = tf.cast(tf.floor(fraction * tf.cast(length, tf.float32)), tf.int32)
    lowest, highest = tf.minimum(1, length), tf.maximum(length - 1, 0)
    if sequence_length and sequence_length.get("inputs") and sequence_length.get("targets"):
        lowest = tf.maximum(lowest, length - (sequence_length["targets"] - 1))
        highest = tf.minimum(highest, sequence_length["inputs"] - 2)
    return tf.clip_by_value(cut, lowest, highest)


def complete_at(residues: tf.Tensor, cut: tf.Tensor,
                prefix_id: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The `[S2S]` example (EOS not yet appended): inputs prefix + residues[:cut], targets the
    rest."""
    return tf.concat([[prefix_id], residues[:cut]], axis=0), residues[cut:]


def _salted_seed(seed, salt: int) -> tf.Tensor:
    """seqio's per-example seed (a pair of int64 scalars) plus (0, `salt`), as an int64 [2]."""
    return tf.cast(tf.stack(seed), tf.int64) + tf.constant([0, salt], tf.int64)


def _vocabulary(output_features: Mapping[str, seqio.Feature]) -> seqio.Vocabulary:
    vocabulary = output_features["inputs"].vocabulary
    if vocabulary != output_features["targets"].vocabulary:
        raise ValueError("the Ankh3 tasks need one vocabulary for inputs and targets")
    return vocabulary


def normalize_sequence(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Uppercases `sequence` and removes whitespace from it.

    Input features: `sequence` (string), others passed through. Output: the same features.
    The shards of `pipelines/` are normalized already; this makes shards written by other tools
    tokenize the same way.
    """

    @seqio.map_over_dataset
    def normalize(example):
        example = dict(example)
        example["sequence"] = tf.strings.upper(
            tf.strings.regex_replace(example["sequence"], r"\s+", ""))
        return example

    return normalize(dataset)


def tokenize_residues(dataset: tf.data.Dataset,
                      output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """Tokenizes `sequence` with the tasks' vocabulary into `residues`, one id per residue.

    Input features: `id` (string), `sequence` (string). Output features: `id` (string),
    `residues` (int32 ids). Fails, naming the record's `id`, when the vocabulary does not give
    exactly one id per residue or gives `<unk>` (a residue it does not know).
    """
    vocabulary = _vocabulary(output_features)
    unk_id = vocabulary.unk_id

    @seqio.map_over_dataset
    def tokenize(example):
        residues = tf.cast(vocabulary.encode_tf(example["sequence"]), tf.int32)
        length = tf.strings.length(example["sequence"], unit="UTF8_CHAR")
        check = tf.debugging.Assert(
            tf.equal(tf.size(residues), length) & tf.reduce_all(tf.not_equal(residues, unk_id)),
            ["record", example["id"], "does not tokenize to one known id per residue:",
             example["sequence"], residues], summarize=64)
        with tf.control_dependencies([check]):
            return {"id": example["id"], "residues": tf.identity(residues)}

    return tokenize(dataset)


def fuse_maps(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Turns on tf.data's map fusion for the whole pipeline; the examples are unchanged.

    Input and output: any features. Consecutive maps (the objective, EOS, seqio's checks and
    trimming) then run as one function per example instead of one pipeline stage each, which
    saves a stage hand-off per map (about 8 % of the mixture's CPU time per example, see
    bench/bench_tasks.py). Fusion changes neither the order nor the values of the examples, so a
    seed still gives the same examples.
    """
    options = tf.data.Options()
    options.experimental_optimization.map_fusion = True
    return dataset.with_options(options)


def denoise(dataset: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
            output_features: Mapping[str, seqio.Feature], mask_probability: float,
            crop_policy: str = RANDOM_CROP, prefix: str = "[NLU]",
            seed_salt: int = 0) -> tf.data.Dataset:
    """The `[NLU]` denoising objective: crop, mask each residue with `mask_probability`, cap the
    masked count at `mask_budget`, and build inputs/targets (see `denoise_with_mask`).

    Input features: `id` (string), `residues` (int32). Output features: `id`, `inputs`,
    `targets` (int32, without EOS), `mask_overflow` (int32 scalar: residues drawn for masking but
    left unmasked because the budget was full; 0 almost always with the defaults).
    """
    if not 0.0 < mask_probability < 1.0:
        raise ValueError("mask probability must be in (0, 1), got %r" % mask_probability)
    vocabulary = _vocabulary(output_features)
    prefix_id = single_token_id(vocabulary, prefix)
    budget = mask_budget(vocabulary, sequence_length)
    max_residues = denoising_max_residues(sequence_length)
    if max_residues is not None:
        expected = mask_probability * max_residues
        spread = math.sqrt(max_residues * mask_probability * (1.0 - mask_probability))
        if expected + _OVERFLOW_WARNING_SIGMAS * spread > budget:
            logging.warning(
                "denoising with p=%g on up to %d residues expects %.0f +- %.0f masked residues, "
                "but only %d fit (sentinels / targets length); the excess is unmasked",
                mask_probability, max_residues, expected, spread, budget)

    @seqio.map_over_dataset(num_seeds=1)
    def make_example(example, seed):
        seed = _salted_seed(seed, seed_salt)
        residues = crop_window(example["residues"], max_residues, crop_policy, seed)
        drawn = draw_mask(tf.size(residues), mask_probability, seed + _MASK_SEED_OFFSET)
        mask = cap_mask(drawn, budget, seed + _CAP_SEED_OFFSET)
        inputs, targets = denoise_with_mask(residues, mask, prefix_id, vocabulary.vocab_size)
        # `cap_mask` keeps exactly `budget` of a mask that has more.
        overflow = tf.maximum(tf.reduce_sum(tf.cast(drawn, tf.int32)) - budget, 0)
        return {"id": example["id"], "inputs": inputs, "targets": targets,
                "mask_overflow": overflow}

    return make_example(dataset)


def complete(dataset: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
             output_features: Mapping[str, seqio.Feature],
             cut_fractions: Sequence[float] = (0.5, 0.5), crop_policy: str = RANDOM_CROP,
             prefix: str = "[S2S]", seed_salt: int = 0) -> tf.data.Dataset:
    """The `[S2S]` completion objective: crop (see `completion_max_residues`), cut (see
    `cut_point`), inputs prefix + head, targets the tail.

    Input features: `id` (string), `residues` (int32). Output features: `id`, `inputs`,
    `targets` (int32, without EOS).
    """
    cut_fractions = check_cut_fractions(cut_fractions)
    prefix_id = single_token_id(_vocabulary(output_features), prefix)
    max_residues = completion_max_residues(sequence_length, cut_fractions)

    @seqio.map_over_dataset(num_seeds=1)
    def make_example(example, seed):
        seed = _salted_seed(seed, seed_salt)
        residues = crop_window(example["residues"], max_residues, crop_policy, seed)
        cut = cut_point(tf.size(residues), cut_fractions, sequence_length,
                        seed + _CUT_SEED_OFFSET)
        inputs, targets = complete_at(residues, cut, prefix_id)
        return {"id": example["id"], "inputs": inputs, "targets": targets}

    return make_example(dataset)
