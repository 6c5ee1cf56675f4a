"""Tests of the Ankh3 preprocessors: the model card's example, properties over random proteins."""
import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
import seqio
import tensorflow as tf

from tasks import preprocessors
from tasks import vocabulary as vocabulary_lib

VOCAB = vocabulary_lib.ProteinVocabulary()
NLU = VOCAB.encode("[NLU]")[0]
S2S = VOCAB.encode("[S2S]")[0]
FEATURES = {"inputs": seqio.Feature(VOCAB), "targets": seqio.Feature(VOCAB)}
RESIDUE_IDS = VOCAB.encode(vocabulary_lib.RESIDUES)
proteins = st.text(alphabet=vocabulary_lib.RESIDUES, min_size=1, max_size=700)
lengths = st.fixed_dictionaries({"inputs": st.integers(8, 600), "targets": st.integers(8, 600)})


def example_of(sequence):
    return {"id": tf.constant("P1"), "residues": tf.constant(VOCAB.encode(sequence), tf.int32)}


def run_preprocessor(preprocessor, sequences, seed, **kwargs):
    dataset = tf.data.Dataset.from_tensor_slices(
        {"id": ["P%d" % i for i in range(len(sequences))],
         "residues": tf.ragged.constant([VOCAB.encode(s) for s in sequences], tf.int32)})
    with seqio.utils.map_seed_manager(seed):
        return list(preprocessor(dataset, output_features=FEATURES, **kwargs).as_numpy_iterator())


def reconstruct(inputs, targets):
    """Puts the residue after each sentinel of the targets back into the inputs' sentinels."""
    hidden = {int(s): int(r) for s, r in zip(targets[0::2], targets[1::2])}
    return [hidden.get(int(i), int(i)) for i in inputs[1:]]


def test_model_card_example():
    residues = tf.constant(VOCAB.encode("MKAYVLINSRGP"))
    mask = tf.constant([i in (1, 4, 7, 11) for i in range(12)])
    inputs, targets = preprocessors.denoise_with_mask(residues, mask, NLU, VOCAB.vocab_size)
    assert VOCAB.decode(inputs.numpy()) == (
        "[NLU]M<extra_id_0>AY<extra_id_1>LI<extra_id_2>SRG<extra_id_3>")
    assert VOCAB.decode(targets.numpy()) == "<extra_id_0>K<extra_id_1>V<extra_id_2>N<extra_id_3>P"
    assert inputs.numpy().tolist() == [3, 24, 255, 8, 22, 254, 7, 15, 253, 10, 13, 9, 252]
    assert targets.numpy().tolist() == [255, 18, 254, 11, 253, 19, 252, 17]


def test_model_card_completion_cuts_at_half():
    residues = tf.constant(VOCAB.encode("MKAYVLINSRGP"))
    cut = preprocessors.cut_point(12, (0.5, 0.5), None, seed=tf.constant([1, 2]))
    inputs, targets = preprocessors.complete_at(residues, cut, S2S)
    assert VOCAB.decode(inputs.numpy()) == "[S2S]MKAYVL"
    assert VOCAB.decode(targets.numpy()) == "INSRGP"


@settings(max_examples=40, deadline=None)
@given(sequences=st.lists(proteins, min_size=1, max_size=4), sequence_length=lengths,
       probability=st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.9]), seed=st.integers(0, 2**30),
       policy=st.sampled_from(preprocessors.CROP_POLICIES))
def test_denoising_properties(sequences, sequence_length, probability, seed, policy):
    examples = run_preprocessor(
        preprocessors.denoise, sequences, seed, sequence_length=sequence_length,
        mask_probability=probability, crop_policy=policy)
    budget = preprocessors.mask_budget(VOCAB, sequence_length)
    for sequence, ex in zip(sequences, examples):
        inputs, targets = ex["inputs"], ex["targets"]
        assert inputs[0] == NLU
        # + EOS, appended later: each feature fits its length.
        assert len(inputs) + 1 <= sequence_length["inputs"]
        assert len(targets) + 1 <= sequence_length["targets"]
        # Sentinels in order <extra_id_0>, <extra_id_1>, ..., inside the vocabulary, never
        # reused, and never a residue id.
        sentinels = [i for i in inputs if i >= VOCAB.vocab_size - VOCAB.extra_ids]
        assert sentinels == [VOCAB.vocab_size - 1 - k for k in range(len(sentinels))]
        assert targets[0::2].tolist() == sentinels
        assert len(sentinels) <= budget
        assert set(targets[1::2]) <= set(RESIDUE_IDS)
        assert all(0 <= i < VOCAB.vocab_size for i in np.concatenate([inputs, targets]))
        # Putting the residues back gives a window of the original protein (the whole of it
        # when it fits; its start under the `start` policy).
        window = VOCAB.decode(reconstruct(inputs, targets))
        assert window in sequence
        assert len(window) == min(len(sequence), sequence_length["inputs"] - 2)
        if policy == preprocessors.START_CROP:
            assert sequence.startswith(window)
        assert ex["mask_overflow"] >= 0


@settings(max_examples=40, deadline=None)
@given(sequences=st.lists(proteins, min_size=1, max_size=4), sequence_length=lengths,
       cut=st.sampled_from([(0.5, 0.5), (0.2, 0.8), (0.1, 0.3), (0.7, 0.7)]),
       seed=st.integers(0, 2**30), policy=st.sampled_from(preprocessors.CROP_POLICIES))
def test_completion_properties(sequences, sequence_length, cut, seed, policy):
    examples = run_preprocessor(
        preprocessors.complete, sequences, seed, sequence_length=sequence_length,
        cut_fractions=cut, crop_policy=policy)
    max_residues = preprocessors.completion_max_residues(sequence_length, cut)
    for sequence, ex in zip(sequences, examples):
        inputs, targets = ex["inputs"], ex["targets"]
        assert inputs[0] == S2S
        assert len(inputs) + 1 <= sequence_length["inputs"]
        assert len(targets) + 1 <= sequence_length["targets"]
        window = VOCAB.decode(np.concatenate([inputs[1:], targets]))
        assert window in sequence
        assert len(window) == min(len(sequence), max_residues)
        if len(window) >= 2:
            assert len(inputs) >= 2 and len(targets) >= 1
            # The cut is floor(f * length), f in the range, moved by at most one residue.
            head = len(inputs) - 1
            assert math.floor(cut[0] * len(window)) - 1 <= head
            assert head <= math.floor(cut[1] * len(window)) + 1


def test_completion_uses_the_whole_feature_lengths():
    sequence_length = {"inputs": 512, "targets": 512}
    assert preprocessors.completion_max_residues(sequence_length, (0.5, 0.5)) == 1020
    [ex] = run_preprocessor(preprocessors.complete, ["A" * 3000], 0,
                            sequence_length=sequence_length)
    assert (len(ex["inputs"]), len(ex["targets"])) == (511, 510)


@pytest.mark.parametrize("probability", [0.1, 0.2, 0.3])
def test_masking_rate_is_p(probability):
    """Over 200,000 residues the masked fraction is within 5 standard errors of p."""
    sequences = ["ACDEFGHIKLMNPQRSTVWY" * 10] * 1000
    examples = run_preprocessor(preprocessors.denoise, sequences, 7,
                                sequence_length={"inputs": 512, "targets": 512},
                                mask_probability=probability)
    masked = sum(len(ex["targets"]) // 2 for ex in examples)
    assert sum(int(ex["mask_overflow"]) for ex in examples) == 0
    trials = sum(len(s) for s in sequences)
    bound = 5 * math.sqrt(probability * (1 - probability) / trials)
    assert abs(masked / trials - probability) < bound


def test_overflow_unmasks_at_random_within_budget():
    drawn = tf.constant([True] * 300 + [False] * 10)
    capped = [preprocessors.cap_mask(drawn, 224, tf.constant([s, 0])).numpy() for s in (1, 2)]
    for mask in capped:
        assert mask.sum() == 224 and not mask[300:].any()
    assert (capped[0] != capped[1]).any()
    # A 1000-residue protein of which 90 % is drawn: the excess is unmasked and counted.
    sequence_length = {"inputs": 1002, "targets": 1001}
    [ex] = run_preprocessor(preprocessors.denoise, ["L" * 1000], 3,
                            sequence_length=sequence_length, mask_probability=0.9)
    assert len(ex["targets"]) == 2 * 224
    assert 600 < ex["mask_overflow"] < 750  # Binomial(1000, 0.9) - 224: 676 +- 10
    assert len(set(ex["inputs"])) == 1 + 1 + 224  # prefix, L, every sentinel once


def test_same_seed_same_examples_other_seed_other_examples():
    sequences = ["MKAYVLINSRGP" * 60, "ACDEFGHIKLMNPQRSTVWY" * 5]
    kwargs = dict(sequence_length={"inputs": 128, "targets": 128}, mask_probability=0.2)
    first = run_preprocessor(preprocessors.denoise, sequences, 5, **kwargs)
    again = run_preprocessor(preprocessors.denoise, sequences, 5, **kwargs)
    other = run_preprocessor(preprocessors.denoise, sequences, 6, **kwargs)
    same = [a["inputs"].tolist() == b["inputs"].tolist() for a, b in zip(first, again)]
    differ = [a["inputs"].tolist() != b["inputs"].tolist() for a, b in zip(first, other)]
    assert all(same) and any(differ)


def test_seed_salt_gives_siblings_different_masks():
    kwargs = dict(sequence_length={"inputs": 128, "targets": 128}, mask_probability=0.3)
    a = run_preprocessor(preprocessors.denoise, ["MKAYVLINSRGP" * 10], 5, seed_salt=1, **kwargs)
    b = run_preprocessor(preprocessors.denoise, ["MKAYVLINSRGP" * 10], 5, seed_salt=2, **kwargs)
    assert a[0]["inputs"].tolist() != b[0]["inputs"].tolist()


def test_invalid_settings_are_errors():
    with pytest.raises(ValueError, match="cut fractions"):
        preprocessors.check_cut_fractions((0.6, 0.4))
    with pytest.raises(ValueError, match="crop policy"):
        preprocessors.crop_window(tf.constant([1, 2]), 1, "middle", tf.constant([0, 0]))
    with pytest.raises(ValueError, match="mask probability"):
        run_preprocessor(preprocessors.denoise, ["MK"], 0, sequence_length=None,
                         mask_probability=1.5)


def test_tokenize_names_the_record_that_does_not_fit_the_vocabulary():
    dataset = tf.data.Dataset.from_tensors({"id": "UniRef50_BAD", "sequence": "MK<AY"})
    with pytest.raises(tf.errors.InvalidArgumentError, match="UniRef50_BAD"):
        list(preprocessors.tokenize_residues(dataset, output_features=FEATURES))
    dataset = tf.data.Dataset.from_tensors({"id": "P1", "sequence": " mk ay\n"})
    [ex] = list(preprocessors.tokenize_residues(preprocessors.normalize_sequence(dataset),
                                                output_features=FEATURES).as_numpy_iterator())
    assert ex["residues"].tolist() == VOCAB.encode("MKAY")
