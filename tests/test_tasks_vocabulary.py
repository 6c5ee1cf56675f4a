"""Tests of ProteinVocabulary, and of the tasks with a SentencePiece vocabulary chosen by gin."""
import pickle

import gin
from hypothesis import given, settings, strategies as st
import pytest
import seqio
import tensorflow as tf

from tasks import mixtures
from tasks import vocabulary as vocabulary_lib

VOCAB = vocabulary_lib.ProteinVocabulary()
ANKH3_RESIDUE_IDS = dict(zip("LAGSVERTIDPKNFQYHMCW", range(7, 27)))


def test_layout_matches_ankh3():
    assert VOCAB.vocab_size == 256
    assert (VOCAB.pad_id, VOCAB.eos_id, VOCAB.unk_id) == (0, 1, 2)
    assert [VOCAB.encode(residue)[0] for residue in ANKH3_RESIDUE_IDS] == list(
        ANKH3_RESIDUE_IDS.values())
    assert VOCAB.encode("XBZUO") == [27, 28, 29, 30, 31]
    assert VOCAB.encode("[NLU][S2S]") == [3, 4]
    assert VOCAB.encode("<extra_id_0><extra_id_1><extra_id_223>") == [255, 254, 32]
    assert VOCAB.extra_ids == 224
    # Every id decodes to a distinct visible token, and encodes back.
    tokens = [VOCAB.decode([i]) for i in range(2, 256)]
    assert len(set(tokens)) == len(tokens) and all(tokens)
    assert [VOCAB.encode(token) for token in tokens] == [[i] for i in range(2, 256)]


def test_unknown_characters_map_to_unk():
    assert VOCAB.encode("mK J*<extra_id_224>") == [2, 18, 2, 2, 2, 2]
    assert VOCAB.encode_tf(tf.constant("mK J*<extra_id_224>")).numpy().tolist() == [
        2, 18, 2, 2, 2, 2]
    assert VOCAB.decode([24, 300, -1, 0, 18, 1, 8]) == "M<unk><unk>K"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(
    list(vocabulary_lib.RESIDUES) + ["[NLU]", "[S2S]", "<extra_id_0>", "<extra_id_17>", "<unk>",
                                     "<", "[", "é", "x", " "]), max_size=40))
def test_encode_tf_equals_encode_and_decode_inverts(tokens):
    text = "".join(tokens)
    ids = VOCAB.encode(text)
    assert VOCAB.encode_tf(tf.constant(text)).numpy().tolist() == ids
    batch = VOCAB.encode_tf(tf.constant([text, "MK"]))
    assert batch.to_list() == [ids, [24, 18]]
    known = [i for i in ids if i != VOCAB.unk_id]
    assert VOCAB.encode(VOCAB.decode(known)) == known
    assert VOCAB.decode_tf(tf.constant(known + [1, 9], tf.int32)).numpy().decode() == \
        VOCAB.decode(known)


def test_equality_hash_and_pickling():
    assert VOCAB == vocabulary_lib.ProteinVocabulary()
    assert hash(VOCAB) == hash(vocabulary_lib.ProteinVocabulary())
    assert VOCAB != seqio.PassThroughVocabulary(256)
    assert pickle.loads(pickle.dumps(VOCAB)) == VOCAB


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _train_sentencepiece(path):
    sentencepiece = pytest.importorskip("sentencepiece", reason="pip install sentencepiece")
    proteins = ["MKAYVLINSRGPACDEFGHIKLMNPQRSTVWYXBZUO" * 3, "LLAGSVERTIDPKNFQYHMCW" * 4] * 50
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(proteins), model_prefix=str(path), model_type="char",
        vocab_size=45, hard_vocab_limit=False, character_coverage=1.0,
        user_defined_symbols=["[NLU]", "[S2S]"], pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        add_dummy_prefix=False, minloglevel=2)
    return str(path) + ".model"


def _write_shard(path, sequences):
    with tf.io.TFRecordWriter(path) as writer:
        for i, sequence in enumerate(sequences):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"P%d" % i])),
                "sequence": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[sequence.encode()])),
            })).SerializeToString())


def test_gin_selects_sentencepiece_vocabulary_and_tasks_still_work(tmp_path, clean_gin):
    model = _train_sentencepiece(tmp_path / "protein_sp")
    sequences = ["MKAYVLINSRGP" * 5, "ACDEFGHIKLMNPQRSTVWY" * 20, "WYHMC"]
    _write_shard(str(tmp_path / "train.tfrecord-00000-of-00001"), sequences)
    gin.parse_config("\n".join([
        "from __gin__ import dynamic_registration",
        "import seqio",
        "from tasks import mixtures",
        "mixtures.ankh3_pretrain_mixture.data_dir = %r" % str(tmp_path),
        "mixtures.ankh3_pretrain_mixture.vocabulary = @seqio.SentencePieceVocabulary()",
        "seqio.SentencePieceVocabulary.sentencepiece_model_file = %r" % model,
        "seqio.SentencePieceVocabulary.extra_ids = 100",
    ]))
    name = mixtures.ankh3_pretrain_mixture()
    vocab = seqio.get_mixture_or_task(name).output_features["inputs"].vocabulary
    assert isinstance(vocab, seqio.SentencePieceVocabulary)
    sentinel_floor = vocab.vocab_size - vocab.extra_ids
    lengths = {"inputs": 64, "targets": 64}
    for task in seqio.get_mixture_or_task(name).tasks:
        prefix = vocab.tokenizer.piece_to_id("[S2S]" if "complete" in task.name else "[NLU]")
        seen = set()
        for ex in task.get_dataset(lengths, shuffle=False, seed=1).as_numpy_iterator():
            inputs, targets = ex["inputs"].tolist(), ex["targets"].tolist()
            assert inputs[0] == prefix and inputs[-1] == targets[-1] == vocab.eos_id
            assert max(inputs + targets) < vocab.vocab_size
            if "complete" in task.name:
                residues = inputs[1:-1] + targets[:-1]
            else:
                hidden = dict(zip(targets[0:-1:2], targets[1:-1:2]))
                assert all(s >= sentinel_floor for s in hidden)
                residues = [hidden.get(i, i) for i in inputs[1:-1]]
            window = vocab.decode(residues)
            assert any(window in s for s in sequences)
            seen.add(ex["id"])
        assert len(seen) == len(sequences)
