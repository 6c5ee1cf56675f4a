"""SeqIO preprocessors for profile prediction: encoder-aligned per-residue profile targets.

Reads the records of `python -m pipelines.profiles` (`id`, `sequence`, `profile`: L x 20 uint8,
rows summing to 255, residues in HMMER's order ACDEFGHIKLMNPQRSTVWY; see docs/profiles.md) and
makes examples with

    inputs           int32: prefix, residues (sentinels in the joint form), then EOS (appended
                     by seqio.preprocessors.append_eos_after_trim)
    targets          int32: the denoising targets (joint), or none (profile-only: EOS alone)
    input_profiles   float32 [len(inputs without EOS), 20]: the profile of the residue at each
                     input position; zero at the prefix and at sentinels
    profile_weights  float32 [len(inputs without EOS)]: 1 where a position has a target, else 0
                     (prefix, sentinels, residues whose profile is all zero)

EOS and padding get zero rows and weights from the feature converter
(`ProfileEncDecFeatureConverter`), which pads both to the inputs length. The crop picks one
window of positions and takes residues and profile rows from it alike, so they stay aligned.
`add_zero_profiles` gives the examples of the other Ankh3 tasks zero profiles and weights, so
that they mix with the profile tasks in one mixture and add nothing to the profile loss.
"""
from typing import Mapping, Optional

import seqio
import tensorflow as tf

from tasks import preprocessors

PROFILE_SIZE = 20
QUANTIZATION_LEVELS = 255.0
PROFILE_ONLY = "profile_only"
JOINT = "joint"
PROFILE_FORMS = (PROFILE_ONLY, JOINT)
INPUT_PROFILES = "input_profiles"
PROFILE_WEIGHTS = "profile_weights"


def decode_profile(data: tf.Tensor) -> tf.Tensor:
    """`profile` bytes -> float32 [L, 20] probabilities (q / 255)."""
    q = tf.reshape(tf.io.decode_raw(data, tf.uint8), [-1, PROFILE_SIZE])
    return tf.cast(q, tf.float32) / QUANTIZATION_LEVELS


def tokenize_with_profile(dataset: tf.data.Dataset,
                          output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """Tokenizes `sequence` (one id per residue, as `preprocessors.tokenize_residues`) and
    decodes `profile`.

    Input features: `id`, `sequence`, `profile` (strings). Output features: `id` (string),
    `residues` (int32 [L]), `profile` (float32 [L, 20]). Fails, naming the record, when a residue
    is not one known id or the profile does not have one row per residue.
    """
    vocabulary = output_features["inputs"].vocabulary
    unk_id = vocabulary.unk_id

    @seqio.map_over_dataset
    def tokenize(example):
        residues = tf.cast(vocabulary.encode_tf(example["sequence"]), tf.int32)
        profile = decode_profile(example["profile"])
        length = tf.strings.length(example["sequence"], unit="UTF8_CHAR")
        check = tf.debugging.Assert(
            tf.equal(tf.size(residues), length) & tf.reduce_all(tf.not_equal(residues, unk_id))
            & tf.equal(tf.shape(profile)[0], length),
            ["record", example["id"], "does not give one known id and one profile row per "
             "residue:", example["sequence"], tf.shape(profile)], summarize=64)
        with tf.control_dependencies([check]):
            return {"id": example["id"], "residues": tf.identity(residues),
                    "profile": tf.identity(profile)}

    return tokenize(dataset)


def crop_positions(length: tf.Tensor, max_residues: Optional[int], policy: str,
                   seed: tf.Tensor) -> tf.Tensor:
    """The positions of the crop window (`preprocessors.crop_window` on 0..L-1), so that the
    same window cuts the residues and their profile rows."""
    return preprocessors.crop_window(tf.range(length), max_residues, policy, seed)


def profile_example(residues: tf.Tensor, profile: tf.Tensor, mask: tf.Tensor, prefix_id: int,
                    vocabulary_size: int) -> dict:
    """The example of one cropped protein and its mask (all False: profile-only).

    inputs/targets as `preprocessors.denoise_with_mask` (targets empty when nothing is masked);
    input_profiles zero at the prefix and at masked positions; profile_weights 1 at unmasked
    residues that have a target.
    """
    inputs, targets = preprocessors.denoise_with_mask(residues, mask, prefix_id, vocabulary_size)
    keep = tf.logical_not(mask) & (tf.reduce_sum(profile, axis=1) > 0)
    profiles = tf.where(keep[:, None], profile, 0.0)
    zero_row = tf.zeros([1, PROFILE_SIZE], tf.float32)
    return {
        "inputs": inputs,
        "targets": targets,
        INPUT_PROFILES: tf.concat([zero_row, profiles], axis=0),
        PROFILE_WEIGHTS: tf.concat([[0.0], tf.cast(keep, tf.float32)], axis=0),
    }


def profile_objective(dataset: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
                      output_features: Mapping[str, seqio.Feature], form: str = JOINT,
                      mask_probability: float = 0.15, prefix: str = "[NLU]",
                      crop_policy: str = preprocessors.RANDOM_CROP,
                      seed_salt: int = 0) -> tf.data.Dataset:
    """Profile-only (unmasked input) or joint (masked as `ankh3_denoise_pXX`) examples.

    Input features: `id`, `residues` (int32 [L]), `profile` (float32 [L, 20]). Output: `id`,
    `inputs`, `targets` (int32, without EOS), `input_profiles`, `profile_weights` (see the
    module docstring). Crop, mask and cap are drawn as in `preprocessors.denoise`.
    """
    if form not in PROFILE_FORMS:
        raise ValueError("profile form must be one of %s, got %r" % (PROFILE_FORMS, form))
    if form == JOINT and not 0.0 < mask_probability < 1.0:
        raise ValueError("mask probability must be in (0, 1), got %r" % mask_probability)
    vocabulary = output_features["inputs"].vocabulary
    prefix_id = preprocessors.single_token_id(vocabulary, prefix)
    budget = preprocessors.mask_budget(vocabulary, sequence_length)
    max_residues = preprocessors.denoising_max_residues(sequence_length)

    @seqio.map_over_dataset(num_seeds=1)
    def make_example(example, seed):
        seed = tf.cast(tf.stack(seed), tf.int64) + tf.constant([0, seed_salt], tf.int64)
        positions = crop_positions(tf.size(example["residues"]), max_residues, crop_policy, seed)
        residues = tf.gather(example["residues"], positions)
        profile = tf.gather(example["profile"], positions)
        if form == JOINT:
            drawn = preprocessors.draw_mask(tf.size(residues), mask_probability, seed + (1, 0))
            mask = preprocessors.cap_mask(drawn, budget, seed + (2, 0))
        else:
            mask = tf.zeros_like(residues, tf.bool)
        return dict(profile_example(residues, profile, mask, prefix_id, vocabulary.vocab_size),
                    id=example["id"])

    return make_example(dataset)


def add_zero_profiles(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Adds zero `input_profiles` [len(inputs), 20] and `profile_weights` to the examples of a
    task without profiles (the other Ankh3 tasks of a profile mixture).

    Input features: `inputs` and any others. Output: the same plus the two profile features.
    """

    @seqio.map_over_dataset
    def add(example):
        example = dict(example)
        length = tf.size(example["inputs"])
        example[INPUT_PROFILES] = tf.zeros([length, PROFILE_SIZE], tf.float32)
        example[PROFILE_WEIGHTS] = tf.zeros([length], tf.float32)
        return example

    return add(dataset)


class ProfileEncDecFeatureConverter(seqio.EncDecFeatureConverter):
    """seqio's encoder-decoder converter, plus `encoder_input_profiles` [I, 20] and
    `encoder_profile_weights` [I], padded (EOS and padding rows zero) to the inputs length I.

    Without packing only: packing would need the profile rows cut and joined with the inputs'
    segments, and profile examples are single proteins as long as the inputs allow, which
    leaves little to pack (docs/profiles.md).
    """

    MODEL_FEATURES = dict(
        seqio.EncDecFeatureConverter.MODEL_FEATURES,
        encoder_input_profiles=seqio.FeatureConverter.FeatureSpec(dtype=tf.float32, rank=2),
        encoder_profile_weights=seqio.FeatureConverter.FeatureSpec(dtype=tf.float32))

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("ProfileEncDecFeatureConverter does not pack; set "
                             "DatasetConfig.pack = False for profile mixtures")
        super().__init__(pack=False, **kwargs)

    def __call__(self, ds, task_feature_lengths):
        # The profile features take the inputs' length; seqio's Evaluator passes a length for
        # every output feature of a task, t5x.train only those of `inputs` and `targets`.
        task_feature_lengths = {name: length for name, length in task_feature_lengths.items()
                                if name not in (INPUT_PROFILES, PROFILE_WEIGHTS)}
        return super().__call__(ds, task_feature_lengths)

    def _convert_features(self, ds, task_feature_lengths):
        length = task_feature_lengths["inputs"]

        def pad(example):
            example = dict(example)
            profiles = example[INPUT_PROFILES][:length]
            weights = example[PROFILE_WEIGHTS][:length]
            missing = length - tf.shape(weights)[0]
            example[INPUT_PROFILES] = tf.ensure_shape(
                tf.pad(profiles, [[0, missing], [0, 0]]), [length, PROFILE_SIZE])
            example[PROFILE_WEIGHTS] = tf.ensure_shape(tf.pad(weights, [[0, missing]]), [length])
            return example

        return super()._convert_features(ds.map(pad), task_feature_lengths)

    def _convert_example(self, features):
        converted = dict(super()._convert_example(features))
        converted["encoder_input_profiles"] = features[INPUT_PROFILES]
        converted["encoder_profile_weights"] = features[PROFILE_WEIGHTS]
        return converted

    def get_model_feature_lengths(self, task_feature_lengths):
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        lengths["encoder_input_profiles"] = task_feature_lengths["inputs"]
        lengths["encoder_profile_weights"] = task_feature_lengths["inputs"]
        return lengths
