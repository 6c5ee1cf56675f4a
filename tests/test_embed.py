"""models.embed: per-residue encoder embeddings from random weights, a checkpoint, the CLI."""
import gzip
import os

import numpy as np
import pytest

pytest.importorskip("t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")

import jax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

from models import embed  # noqa: E402
from tasks import vocabulary  # noqa: E402

TINY_GIN = "gin/models/tiny.gin"
SEQUENCES = ["MKAYVL", "ACDEFGHIKLMNPQRSTVWYXBZUO" * 2, "M", "GSHMSLFDFFKNKGSAAATAAAKK" * 3]


@pytest.fixture(scope="module")
def encoder():
    return embed.load_encoder(gin_file=TINY_GIN, random_seed=0)


def test_one_array_per_sequence_in_input_order_independent_of_batching(encoder):
    arrays = encoder.embed(SEQUENCES, progress=False)
    assert encoder.d_model == 64
    assert [a.shape for a in arrays] == [(len(s), 64) for s in SEQUENCES]
    assert all(a.dtype == np.float32 for a in arrays)
    # Each alone (other bucket length, batch of one) gives the same rows: padding is masked.
    for sequence, batched in zip(SEQUENCES, arrays):
        (alone,) = encoder.embed([sequence], progress=False)
        np.testing.assert_allclose(alone, batched, atol=1e-5)
    # Not a constant: different residues give different rows.
    assert np.abs(arrays[3][0] - arrays[3][1]).max() > 1e-3


def test_prefix_and_eos_are_not_in_the_output(encoder):
    ids = vocabulary.ProteinVocabulary().encode("[NLU]M</s>")
    assert ids == [3, 24, 1]
    tokens = np.array([ids + [0] * 5])
    encoded = encoder.encode_tokens(tokens)
    (arrays,) = encoder.embed(["M"], progress=False)
    np.testing.assert_allclose(arrays, encoded[0, 1:2], atol=1e-5)


@pytest.mark.parametrize("length,window,overlap", [(10, 20, 8), (21, 20, 8), (75, 20, 8),
                                                   (100, 30, 0), (1000, 1024, 256),
                                                   (5000, 1024, 256)])
def test_windows_tile_the_protein(length, window, overlap):
    cuts = embed.windows(length, window, overlap)
    assert cuts[0][2] == 0 and cuts[-1][3] == length
    for (start, stop, keep_start, keep_stop), following in zip(cuts, cuts[1:] + [None]):
        assert stop - start == min(window, length)
        assert start <= keep_start < keep_stop <= stop
        if following is not None:
            assert following[2] == keep_stop
            assert following[0] < stop - overlap + 1  # consecutive windows share >= overlap


def test_long_protein_rows_come_from_their_window(encoder):
    sequence = SEQUENCES[3]
    whole = embed.Encoder(encoder.config, encoder.params, window=None)
    windowed = embed.Encoder(encoder.config, encoder.params, window=30, overlap=10)
    (rows,) = windowed.embed([sequence], progress=False)
    for start, stop, keep_start, keep_stop in embed.windows(len(sequence), 30, 10):
        (piece,) = whole.embed([sequence[start:stop]], progress=False)
        np.testing.assert_allclose(rows[keep_start:keep_stop],
                                   piece[keep_start - start:keep_stop - start], atol=1e-5)
    (unwindowed,) = whole.embed([sequence], progress=False)
    assert np.abs(unwindowed - rows).max() > 1e-3  # the windows did cut


def test_invalid_sequence_is_an_error_naming_it(encoder):
    with pytest.raises(ValueError, match=r"sequence 1: invalid_character .*'a' at residue 3"):
        encoder.embed(["MKV", "MKa"], progress=False)


def test_checkpoint_params_are_read_by_name_ignoring_extra_ones(encoder, tmp_path):
    """A model gin that includes a gin/models config and a checkpoint whose tree holds more than
    the network (here a decoder-less tree plus a head) still give the network's encoder."""
    target = dict(jax.tree_util.tree_map(np.asarray, encoder.params),
                  profile_head={"kernel": np.ones((64, 20), np.float32)})
    checkpoint = tmp_path / "checkpoint_7"
    ocp.PyTreeCheckpointer().save(str(checkpoint / "state"),
                                  {"target": target, "state": {"step": np.int32(7)}})
    gin_file = tmp_path / "with_head.gin"
    gin_file.write_text("include '%s'\nDROPOUT_RATE = 0.1\n" % TINY_GIN)
    loaded = embed.load_encoder(checkpoint=str(checkpoint), gin_file=str(gin_file))
    np.testing.assert_allclose(loaded.embed(SEQUENCES[:2], progress=False)[1],
                               encoder.embed(SEQUENCES[:2], progress=False)[1], atol=1e-6)


def test_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one of checkpoint and random_seed"):
        embed.load_encoder(gin_file=TINY_GIN)
    with pytest.raises(ValueError, match="hf_dir excludes"):
        embed.load_encoder(hf_dir="x", random_seed=0)


def test_cli_writes_ids_per_residue_and_mean(encoder, tmp_path, capsys):
    fasta = tmp_path / "proteins.fasta.gz"
    with gzip.open(fasta, "wt") as f:
        f.write(">UniRef50_A0A000 Some protein n=2 Tax=X TaxID=1 RepID=A\nmkay\nvl*\n"
                ">sp|P12345|NAME_HUMAN Other OS=Homo sapiens OX=9606\n%s\n>plain\n%s\n"
                % (SEQUENCES[1], SEQUENCES[3]))
    output = tmp_path / "emb.npz"
    embed.main(["--gin_file=" + TINY_GIN, "--random_seed=0", "--input=%s" % fasta,
                "--output=%s" % output])
    assert "3 proteins, %d residues" % (6 + len(SEQUENCES[1]) + len(SEQUENCES[3])) \
        in capsys.readouterr().out
    data = np.load(output)
    assert list(data["ids"]) == ["UniRef50_A0A000", "P12345", "plain"]
    expected = encoder.embed([SEQUENCES[0], SEQUENCES[1], SEQUENCES[3]], progress=False)
    assert list(data["lengths"]) == [len(e) for e in expected]
    for i, rows in enumerate(expected):
        got = data["residues"][data["offsets"][i]:data["offsets"][i + 1]]
        np.testing.assert_allclose(got, rows, atol=1e-5)
        np.testing.assert_allclose(data["mean"][i], rows.mean(0), atol=1e-5)
    assert [p for p in os.listdir(tmp_path) if ".tmp" in p] == []


@pytest.mark.parametrize("text,message", [
    (">a\nMKV\n>b\nMK1V\n", r"record 2 \(b\): invalid_character, character '1' at residue 3"),
    (">a\nMKV\n>a\nMKV\n", r"record 2: id a also names record 1"),
    ("MKV\n>a\nMKV\n", r"record 1: sequence lines before the first header"),
    (">a\n\n", r"record 1 \(a\): empty_sequence"),
])
def test_bad_fasta_is_an_error_naming_file_and_record(tmp_path, text, message):
    path = tmp_path / "bad.fasta"
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path) + ": " + message):
        embed.read_fasta(str(path))


def test_checkpoint_hf_directory_and_transformers_give_the_same_embeddings(continued_run,
                                                                           tmp_path):
    """The suite's trained tiny model, read from its t5x checkpoint, from its export, and run
    by transformers' T5EncoderModel on `[NLU]` + residues."""
    torch = pytest.importorskip("torch", reason="torch not installed (requirements.txt)")
    from transformers import AutoTokenizer, T5EncoderModel

    from models import export_hf
    from models import param_count
    from models import t5x_checkpoint

    hf_dir = str(tmp_path / "hf")
    export_hf.export(param_count.network_config_from_gin(TINY_GIN),
                     t5x_checkpoint.read_params(continued_run["checkpoint"]), hf_dir)
    from_checkpoint = embed.load_encoder(checkpoint=continued_run["checkpoint"],
                                         gin_file=TINY_GIN).embed(SEQUENCES, progress=False)
    from_hf_dir = embed.load_encoder(hf_dir=hf_dir).embed(SEQUENCES, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = T5EncoderModel.from_pretrained(hf_dir).eval()
    for sequence, ours, exported in zip(SEQUENCES, from_checkpoint, from_hf_dir):
        np.testing.assert_array_equal(exported, ours)
        with torch.no_grad():
            hidden = model(**tokenizer(["[NLU]" + sequence], return_tensors="pt"))
        np.testing.assert_allclose(hidden.last_hidden_state[0, 1:-1].numpy(), ours, atol=1e-4)


def test_profile_model_checkpoint_embeds_and_predicts_profiles(profile_model, continued_run,
                                                               tmp_path):
    """The profile model's encoder is the network's: its checkpoint gives the plain model's
    embeddings, and `--profiles` adds the head's softmax per residue (as from its export)."""
    plain = embed.load_encoder(checkpoint=continued_run["checkpoint"], gin_file=TINY_GIN)
    with_head = embed.load_encoder(checkpoint=profile_model["checkpoint"],
                                   gin_file=profile_model["model_gin"])
    for ours, theirs in zip(with_head.embed(SEQUENCES, progress=False),
                            plain.embed(SEQUENCES, progress=False)):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="no profile head"):
        plain.profiles([np.zeros((1, 64), np.float32)])
    fasta = tmp_path / "proteins.fasta"
    fasta.write_text(">a\n%s\n>b\n%s\n" % (SEQUENCES[0], SEQUENCES[3]))
    output = tmp_path / "emb.npz"
    embed.main(["--checkpoint=" + profile_model["checkpoint"],
                "--gin_file=" + profile_model["model_gin"], "--input=%s" % fasta,
                "--output=%s" % output, "--profiles", "--no_progress"])
    data = np.load(output)
    assert data["profiles"].shape == (len(SEQUENCES[0]) + len(SEQUENCES[3]), 20)
    np.testing.assert_allclose(data["profiles"].sum(-1), 1.0, atol=1e-5)
    from_export = embed.load_encoder(hf_dir=profile_model["hf_dir"])
    (expected,) = from_export.profiles(from_export.embed([SEQUENCES[0]], progress=False))
    np.testing.assert_allclose(data["profiles"][:len(SEQUENCES[0])], expected, atol=1e-6)
