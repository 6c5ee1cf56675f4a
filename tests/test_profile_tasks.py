"""The profile tasks: encoder-aligned profile targets, crop consistency, the mixture and the
feature converter."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from pipelines import profile_hmm
from pipelines import profiles
from pipelines import tfrecords
from tasks import profile_preprocessors
from tasks import profile_tasks
from tasks import vocabulary as vocabulary_lib

VOCABULARY = vocabulary_lib.ProteinVocabulary()
LENGTHS = {"inputs": 24, "targets": 24}
# Real sequences (fn3 seed rows of LAR_DROME and TENA_CHICK, ungapped).
SEQUENCES = (b"SAPRNVQVRTLSSSTMVITWEPPETPNGQVTGYKVYYTTNSNQPEASWNSQMVDNSELTTVSELTPHAIYTVRVQAYTSM",
             b"DAPKDLSATEVQSETAVITWRPPRAPVTDYLLTYESIDGRVKEVILDPETTSYTLTELSPSTQYTVKLQALSRS")


def _one_hot_profile(sequence: bytes) -> np.ndarray:
    """A profile whose row names its residue: checks that rows stay with their residues."""
    profile = np.zeros((len(sequence), 20), np.float32)
    profile[np.arange(len(sequence)), [profile_hmm.AMINO_ACIDS.index(c) for c in sequence]] = 1
    return profile


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("profiles")
    for split in ("train", "validation"):
        with tf.io.TFRecordWriter(str(directory / ("%s.tfrecord-00000-of-00001" % split))) as out:
            for i, sequence in enumerate(SEQUENCES * 4):
                record = profiles.ProfileRecord(
                    "seq%d" % i, "PF00041", sequence, b"", profile_hmm.quantize_profile(
                        _one_hot_profile(sequence)).tobytes(), "x", i)
                out.write(tfrecords.profile_example(record, 98))
    return str(directory)


def test_profile_example_zero_at_prefix_and_sentinels():
    residues = tf.constant([8, 9, 10, 11], tf.int32)
    profile = tf.constant(np.eye(20, dtype=np.float32)[:4])
    profile = tf.tensor_scatter_nd_update(profile, [[3]], [tf.zeros(20)])  # no target at 3
    mask = tf.constant([False, True, False, False])
    example = profile_preprocessors.profile_example(residues, profile, mask, 3, 256)
    assert example["inputs"].numpy().tolist() == [3, 8, 255, 10, 11]
    assert example["targets"].numpy().tolist() == [255, 9]
    assert example["profile_weights"].numpy().tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(example["input_profiles"].numpy()[[0, 2, 4]], 0)
    np.testing.assert_array_equal(example["input_profiles"].numpy()[1], np.eye(20)[0])


@pytest.mark.parametrize("form", profile_preprocessors.PROFILE_FORMS)
def test_cropped_profiles_stay_with_their_residues(data_dir, form):
    task = profile_tasks.register_profile_task(data_dir, VOCABULARY, form, mask_probability=0.3)
    ds = task.get_dataset(LENGTHS, split="train", shuffle=False, seed=3)
    letters = {VOCABULARY.encode(chr(c))[0]: i for i, c in enumerate(profile_hmm.AMINO_ACIDS)}
    seen = 0
    for example in ds.as_numpy_iterator():
        inputs, weights = example["inputs"], example["profile_weights"]
        assert inputs[0] == VOCABULARY.encode("[NLU]")[0] and len(inputs) == LENGTHS["inputs"]
        assert example["input_profiles"].shape == (len(inputs) - 1, 20)
        for position in np.flatnonzero(weights):
            assert letters[inputs[position]] == example["input_profiles"][position].argmax()
            seen += 1
        sentinels = inputs >= 256 - VOCABULARY.extra_ids
        assert not weights[sentinels[:-1]].any()
        if form == profile_preprocessors.PROFILE_ONLY:
            assert example["targets"].tolist() == [VOCABULARY.eos_id] and not sentinels.any()
        else:
            assert sentinels.any()
    assert seen > 100


def test_mixture_trains_every_objective_through_the_converter(data_dir):
    name = profile_tasks.ankh3_profile_mixture(data_dir, data_dir, profile_share=0.5)
    mixture = seqio.get_mixture_or_task(name)
    assert sorted(t.name for t in mixture.tasks) == [
        "ankh3_complete", "ankh3_denoise_p10", "ankh3_denoise_p20", "ankh3_denoise_p30",
        "ankh3_profile_joint"]
    converter = profile_preprocessors.ProfileEncDecFeatureConverter()
    # The profile task, and one of the Ankh3 tasks that all get zero profiles the same way.
    for task in (seqio.get_mixture_or_task("ankh3_profile_joint"),
                 seqio.get_mixture_or_task("ankh3_complete")):
        converted = converter(task.get_dataset(LENGTHS, split="train", shuffle=False, seed=1),
                              LENGTHS)
        example = next(converted.as_numpy_iterator())
        assert example["encoder_input_profiles"].shape == (24, 20)
        has_profiles = task.name == "ankh3_profile_joint"
        assert (example["encoder_profile_weights"].sum() > 0) == has_profiles
        eos = np.flatnonzero(example["encoder_input_tokens"] == VOCABULARY.eos_id)[0]
        assert not example["encoder_profile_weights"][eos:].any()
    with pytest.raises(ValueError, match="does not pack"):
        profile_preprocessors.ProfileEncDecFeatureConverter(pack=True)
