"""The batched job's per-batch and per-bucket logic (pipelines/buckets.py) and the UniRef header
fast path, tested as plain functions (no Beam pipeline)."""
import collections
import random

from pipelines import dedup
from pipelines import fasta
from pipelines import manifest
from pipelines import records
from pipelines import split


def _general_uniref(text: str) -> records.Header:
    token, rest = (text.split(None, 1) + [""])[:2]
    return fasta._parse_uniref(token, rest)  # pylint: disable=protected-access


def test_uniref_fast_path_agrees_with_the_field_patterns():
    # Headers in UniProt's layout, and near misses (double spaces, tabs, `=` in the name or
    # taxon, spaces before TaxID, empty fields) that must give what the general parser gives.
    rng = random.Random(0)
    pieces = ["UniRef50_A", "UniRef90_UPI0001", " ", "  ", "\t", "n=3", "n=x", "Tax=", "TaxID=12",
              "RepID=Q", "Homo sapiens", "=", "a b", " n=4 ", "Tax=Homo  ", "RepID=", "x"]
    headers = [
        "UniRef50_Q6GZX4 Putative transcription factor 001R n=2 Tax=Frog virus 3 (isolate "
        "Goorha) TaxID=654924 RepID=001R_FRG3G",
        "UniRef90_UPI409C001F54 Choline ABC transporter n=26 RepID=M4KW32_BACIU",
        "UniRef50_A  name n=1 RepID=B", "UniRef50_A name n=1 Tax= TaxID=1 RepID=B",
        "UniRef50_A name n=1 Tax=a  TaxID=1 RepID=B", "UniRef50_A a=b n=1 RepID=B",
    ]
    for _ in range(3000):
        headers.append("UniRef50_Q1 %s n=%d%s%s" % (
            "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6))), rng.randrange(9),
            rng.choice(["", " Tax=A b TaxID=5", " Tax=A  TaxID=5", " Tax= TaxID=1",
                        " Tax=x\tTaxID=2", " Tax=a=b TaxID=3"]),
            rng.choice([" RepID=R", " RepID=R ", "RepID=R", " RepID=R\tS"])))
    fast = 0
    for header in headers:
        fast += bool(fasta._UNIREF_USUAL.fullmatch(header))  # pylint: disable=protected-access
        assert records.parse_header(header) == _general_uniref(header), header
    # Both paths were exercised.
    assert 0 < fast < len(headers)


def _protein(record_id, sequence, path="f", offset=0):
    return records.Record(record_id, record_id, sequence, records.sequence_hash(sequence),
                              None, None, path, offset)


def test_validate_batch_splits_proteins_and_rejections():
    batch = [("f", 0, b"UniRef50_A n=1 RepID=A", b"MKV\n"), ("f", 9, None, b"MK\n"),
             ("f", 20, b"B", b"MK*V\n")]
    proteins, rejected = buckets.validate_batch(batch, records.Rules())
    assert [(p.id, p.sequence, p.offset) for p in proteins] == [("UniRef50_A", b"MKV", 0)]
    assert [(r.offset, r.reason) for r in rejected] == [
        (9, records.SEQUENCE_BEFORE_HEADER), (20, records.INTERNAL_STOP)]


def test_id_conflicts_sends_losers_to_their_sequence_bucket():
    mss, mtt = records.sequence_hash(b"MSS"), records.sequence_hash(b"MTT")
    occurrences = [("Q1", mss, "a", 30), ("Q1", mtt, "a", 40), ("Q1", mss, "a", 50),
                   ("P1", mss, "a", 60), ("P2", mtt, "b", 0), ("P2", mtt, "a", 70)]
    losers = dedup.id_conflicts(occurrences, shuffle_seed=3, num_buckets=5)
    assert dict(losers) == {buckets.sequence_bucket(mtt, 3, 5): [("a", 40)]}


def test_resolve_bucket_matches_resolve_duplicates_per_sequence():
    rng = random.Random(1)
    sequences = [b"MK" + bytes(rng.choice(b"ACDE") for _ in range(3)) for _ in range(40)]
    proteins = [_protein("P%03d" % rng.randrange(300), rng.choice(sequences), "f", offset)
                for offset in range(200)]
    losers = {("f", offset) for offset in range(0, 200, 17)}
    keyed = [(split.shuffle_key(p.sequence_hash, 0), tuple(p)) for p in proteins]
    kept, rejected = dedup.resolve_bucket(keyed, losers, max_duplicate_ids=3)
    assert all(key == split.shuffle_key(protein[3], 0) for protein, _, _, key in kept)
    kept = list(map(buckets.unpack_kept, kept))
    expected_kept, expected_rejected = [], []
    for digest in sorted({p.sequence_hash for p in proteins}):
        one, lost = dedup.resolve_duplicates(
            [p for p in proteins if p.sequence_hash == digest], losers, 3)
        expected_rejected += lost
        if one is not None:
            expected_kept.append(one)
    assert kept == expected_kept
    assert sorted(rejected) == sorted(expected_rejected)
    assert sum(1 + k.num_duplicates for k in kept) + len(rejected) == len(proteins)


def test_pack_kept_round_trips():
    kept = transforms.Kept(records.Record("a", "c", b"MK", b"h", None, 9606, "f", 3), 2,
                           ("x", "y"))
    assert buckets.unpack_kept(buckets.pack_kept(kept, b"key")) == kept


def test_sequence_stats_equal_sequence_stats_fn():
    rng = random.Random(2)
    pairs = [(rng.choice(["train", "validation"]),
              bytes(rng.choices(records.ALPHABET, k=rng.randrange(1, 1200))))
             for _ in range(4000)]
    # The counts `encode_bucket` gives, counted here in plain Python; a split without records
    # ("test") has no statistics.
    counts = {split: (collections.Counter(), [0] * 256)
              for split in ("train", "validation", "test")}
    for split, sequence in pairs:
        length_counts, residue_counts = counts[split]
        length_counts[len(sequence)] += 1
        for residue in sequence:
            residue_counts[residue] += 1
    fn = manifest.SequenceStatsFn()
    accumulator = fn.create_accumulator()
    for pair in pairs:
        accumulator = fn.add_input(accumulator, pair)
    stats = buckets.sequence_stats(counts)
    assert list(stats) == ["train", "validation"]
    assert stats == fn.extract_output(accumulator)
