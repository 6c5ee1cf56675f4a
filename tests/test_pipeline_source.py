"""FastaSource (splitting, compressed input, bad input) and the job's PTransforms on TestPipeline."""
import bz2
import gzip
import re

import apache_beam as beam
import pytest
from apache_beam.io import source_test_utils
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipelines import compression
from pipelines import dedup
from pipelines import fasta
from pipelines import manifest
from pipelines import records
from pipelines import shuffle
from pipelines import split
from pipelines import tfrecords
from pipelines import uniref
from pipelines import writers

SMALL = (b"MKV\nLL\n"  # sequence lines before any header
         b">UniRef50_A first n=1 RepID=A\nMKVL\nAAGG\n"
         b">\n"  # empty header, no sequence
         b">B\r\nMK\r\nWW\r\n"
         b">C 5'>3'\nMSTN\n\n"  # a `>` inside a header starts no record
         b">D last without newline\nMKKK")


def _write(path, data):
    path.write_bytes(data)
    return str(path)


def _read(source):
    """The records of a `FastaSource`, its batches flattened."""
    return [record for batch in source_test_utils.read_from_source(source) for record in batch]


def test_reads_records_with_offsets_headers_and_orphan_lines(tmp_path):
    path = _write(tmp_path / "small.fasta", SMALL)
    records = _read(fasta.FastaSource(path))
    assert records == [
        fasta.RawRecord(path, 0, None, b"MKV\nLL\n"),
        fasta.RawRecord(path, 7, b"UniRef50_A first n=1 RepID=A", b"MKVL\nAAGG\n"),
        fasta.RawRecord(path, 47, b"", b""),
        fasta.RawRecord(path, 49, b"B", b"MK\r\nWW\r\n"),
        fasta.RawRecord(path, 61, b"C 5'>3'", b"MSTN\n\n"),
        fasta.RawRecord(path, 76, b"D last without newline", b"MKKK"),
    ]
    assert all(SMALL[r.offset:r.offset + 1] == b">" for r in records[1:])


def test_compressed_files_give_the_same_records_at_uncompressed_offsets(tmp_path):
    plain = _read(fasta.FastaSource(_write(tmp_path / "x.fasta", SMALL)))
    for name, data in (("x.fasta.gz", gzip.compress(SMALL)), ("x.fasta.bz2", bz2.compress(SMALL)),
                       ("multi.fasta.gz", gzip.compress(SMALL[:30]) + gzip.compress(SMALL[30:]))):
        path = _write(tmp_path / name, data)
        records = _read(fasta.FastaSource(path))
        assert [r._replace(path=None) for r in records] == [r._replace(path=None) for r in plain]


def test_a_file_without_any_record_is_an_error_naming_it(tmp_path):
    for name, data in (("blank.fasta", b"\n\n \n"), ("table.tsv", b"id\tsequence\nP1\tMKV\n"),
                       ("empty.fasta.gz", gzip.compress(b""))):
        path = _write(tmp_path / name, data)
        with pytest.raises(fasta.NoFastaRecordError, match=re.escape(path) + ".*no FASTA record"):
            list(fasta.read_fasta(path))


def test_splits_equal_the_unsplit_source(tmp_path):
    with gzip.open("tests/data/uniref50_sample.fasta.gz", "rb") as f:
        data = f.read()
    path = _write(tmp_path / "sample.fasta", b"ORPHAN\n" + data)
    source = fasta.FastaSource(path, batch_records=1)
    splits = list(source.split(desired_bundle_size=50_000))
    assert len(splits) > 5
    source_test_utils.assert_sources_equal_reference_source(
        (source, None, None), [(s.source, s.start_position, s.stop_position) for s in splits])
    found = _read(source)
    assert len(found) == 901
    assert found[0].header is None
    assert len({r.offset for r in found}) == 901


def test_dynamic_splitting_at_every_fraction(tmp_path):
    path = _write(tmp_path / "small.fasta", SMALL)
    source = fasta.FastaSource(path, batch_records=1)
    source_test_utils.assert_split_at_fraction_exhaustive(source)
    gz_source = fasta.FastaSource(_write(tmp_path / "small.fasta.gz", gzip.compress(SMALL)),
                                  batch_records=1)
    # A compressed file is not splittable: one bundle, read whole by one worker.
    assert len(list(gz_source.split(desired_bundle_size=10))) == 1


def test_truncated_gz_names_file_and_last_record(tmp_path):
    with open("tests/data/uniref50_sample.fasta.gz", "rb") as f:
        data = f.read()
    path = _write(tmp_path / "cut.fasta.gz", data[:len(data) // 2])
    with pytest.raises(compression.TruncatedInputError,
                       match=r"cut\.fasta\.gz is truncated .* last complete record read: "
                             r"'UniRef50_\S+ .*' at offset \d+"):
        _read(fasta.FastaSource(path))


def test_corrupt_gz_fails_with_file_name(tmp_path):
    path = _write(tmp_path / "junk.fasta.gz", gzip.compress(b">A\nMKV\n") + b"not gzip")
    with pytest.raises(compression.TruncatedInputError, match="junk.fasta.gz .*corrupt"):
        _read(fasta.FastaSource(path))


def test_batch_source_batches_the_records_of_every_split(tmp_path):
    records = b"".join(b">R%d\nMKV%s\n" % (i, b"L" * (i % 7)) for i in range(50))
    path = _write(tmp_path / "many.fasta", records)
    expected = [tuple(r) for r in
                _read(fasta.FastaSource(path))]
    source = fasta.FastaSource(path, batch_records=8, batch_bytes=1 << 20)
    batches = source_test_utils.read_from_source(source)
    assert [len(b) for b in batches] == [8] * 6 + [2]
    assert [r for b in batches for r in b] == expected
    # Split: each record in exactly one split's batches, none larger than batch_records.
    split_records = []
    for split in source.split(desired_bundle_size=97):
        for batch in source_test_utils.read_from_source(split.source, split.start_position,
                                                        split.stop_position):
            assert 1 <= len(batch) <= 8
            split_records += batch
    assert split_records == expected
    by_bytes = fasta.FastaSource(path, batch_records=1000, batch_bytes=20)
    assert all(sum(len(r[3]) for r in b[:-1]) < 20
               for b in source_test_utils.read_from_source(by_bytes))


# --- transforms on TestPipeline --------------------------------------------------------------

def test_read_and_validate(tmp_path):
    path = _write(tmp_path / "small.fasta", SMALL)
    with test_pipeline.TestPipeline(runner=uniref.DEFAULT_RUNNER) as p:
        checked = (p | fasta.ReadFasta([path], spread_compressed=True)
                   | records.Validate(records.Rules(min_length=5)))
        assert_that(checked[records.RECORDS] | beam.FlatMap(lambda batch: [
            (x.id, x.sequence) for x in map(records.Record._make, batch)]),
                    equal_to([("UniRef50_A", b"MKVLAAGG")]), label="proteins")
        assert_that(checked.rejected | beam.Map(lambda r: (r.offset, r.reason)), equal_to([
            (0, records.SEQUENCE_BEFORE_HEADER), (47, records.MISSING_ID),
            (49, records.TOO_SHORT), (61, records.TOO_SHORT),
            (76, records.TOO_SHORT)]), label="rejected")
        assert_that(checked[records.RECORDS_PER_FILE] | beam.CombinePerKey(sum),
                    equal_to([(path, 6)]), label="records_per_file")


def _protein(record_id, sequence, offset):
    return records.Record(record_id, record_id, sequence,
                              records.sequence_hash(sequence), None, None, "f", offset)


DEDUP_INPUT = [_protein("P2", b"MKV", 0), _protein("P1", b"MKV", 10), _protein("P3", b"MKV", 20),
               _protein("Q1", b"MSS", 30), _protein("Q1", b"MTT", 40), _protein("Q1", b"MSS", 50)]


def _bucket(sequence, seed, num_buckets):
    return split.shard_of(split.shuffle_key(records.sequence_hash(sequence), seed), num_buckets)


@pytest.mark.parametrize("mode", [uniref.SHUFFLE_BEAM, uniref.SHUFFLE_FILES])
def test_deduplicate(mode, tmp_path):
    # Two input batches, three buckets: the records of one sequence meet in one bucket whatever
    # batch they came in, and the id conflict (Q1) is found across batches and buckets.
    spill_dir = str(tmp_path) if mode == uniref.SHUFFLE_FILES else None
    with test_pipeline.TestPipeline(runner=uniref.DEFAULT_RUNNER) as p:
        result = (p | beam.Create([DEDUP_INPUT[:2], DEDUP_INPUT[2:]])
                  | dedup.Deduplicate(max_duplicate_ids=1, shuffle_seed=0, num_buckets=3,
                                      validation_fraction=0.5, spill_dir=spill_dir))
        if spill_dir:
            assert_that(result[dedup.DUPLICATES] | shuffle.DeleteSpillFiles(spill_dir)
                        | beam.Map(lambda deleted: deleted > 0), equal_to([True]),
                        label="spill_files_deleted")
        assert_that(result[dedup.BUCKETS] | beam.FlatMap(lambda bucket: [
            (k.id, k.offset, k.num_duplicates, k.duplicate_ids, bucket[0], k.split,
             k.shuffle_key == split.shuffle_key(k.sequence_hash, 0)) for k in bucket[1]]),
            equal_to([("P1", 10, 2, ("P2",), _bucket(b"MKV", 0, 3), split.split_of("P1", 0.5),
                       True),
                      ("Q1", 30, 1, ("Q1",), _bucket(b"MSS", 0, 3), split.split_of("Q1", 0.5),
                       True)]),
            label="kept")
        assert_that(result[dedup.BUCKETS] | beam.Map(lambda bucket: bucket[0]),
                    equal_to([0, 1, 2]), label="every_bucket")
        assert_that(result.rejected | beam.Map(lambda r: (r.id, r.offset, r.reason)),
                    equal_to([("Q1", 40, records.DUPLICATE_ID)]), label="rejected")
        assert_that(result[dedup.DUPLICATES] | beam.CombineGlobally(sum), equal_to([3]),
                    label="duplicates")
    assert not spill_dir or list(tmp_path.iterdir()) == []


def test_write_splits_writes_the_train_shard_of_each_bucket(tmp_path):
    fraction, seed, num_shards = 0.2, 5, 3
    assigner = split.Assigner(seed, fraction)
    kept = [assigner.assign(_protein("P%d" % i, b"MK" + b"V" * i, i)._replace(
        num_duplicates=i % 2, duplicate_ids=("D%d" % i,) * (i % 2))) for i in range(40)]
    by_bucket = {b: [] for b in range(num_shards)}
    for k in kept:
        by_bucket[split.shard_of(k.shuffle_key, num_shards)].append(k)
    with test_pipeline.TestPipeline(runner=uniref.DEFAULT_RUNNER) as p:
        written = (p | beam.Create(sorted(by_bucket.items()))
                   | writers.WriteSplits(str(tmp_path), num_shards, 2))
        assert_that(written[writers.SEQUENCE_STATS] | beam.CombineGlobally(
            manifest.MergeStatistics()), equal_to([writers.split_statistics({
                name: [k.sequence for k in kept if k.split == name]
                for name in ("train", "validation")})]), label="stats")
        assert_that(written["outputs"] | beam.Map(lambda o: (o["name"], o["records"])),
                    equal_to([(writers.shard_name("train", ".tfrecord", b, num_shards),
                               sum(k.split == "train" for k in members))
                              for b, members in by_bucket.items()]
                             + [(writers.shard_name("validation", ".tfrecord", s, 2),
                                 sum(k.split == "validation" and split.shard_of(
                                     k.shuffle_key, 2) == s for k in kept)) for s in range(2)]
                             + [("validation_clusters.txt",
                                 sum(k.split == "validation" for k in kept))]),
                    label="outputs")
    for bucket, members in by_bucket.items():
        train = sorted((k.shuffle_key, tfrecords.frame(tfrecords.RecordEncoder().encode(k)))
                       for k in members if k.split == "train")
        shard = tmp_path / writers.shard_name("train", ".tfrecord", bucket, num_shards)
        assert shard.read_bytes() == b"".join(framed for _, framed in train)
    validation_ids = sorted(k.cluster_id for k in kept if k.split == "validation")
    assert validation_ids
    assert (tmp_path / "validation_clusters.txt").read_text().split() == validation_ids


def test_write_shards_writes_every_shard_sorted(tmp_path):
    entries = [(0, (b"b", b"2")), (0, (b"a", b"1")), (2, (b"c", b"3"))]
    with test_pipeline.TestPipeline(runner=uniref.DEFAULT_RUNNER) as p:
        written = (p | beam.Create(entries)
                   | writers.WriteShards(str(tmp_path), "train", ".bin", 3))
        assert_that(written | beam.Map(lambda w: (w["name"], w["records"], w["bytes"])),
                    equal_to([("train.bin-00000-of-00003", 2, 2),
                              ("train.bin-00001-of-00003", 0, 0),
                              ("train.bin-00002-of-00003", 1, 1)]))
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "train.bin-00000-of-00003", "train.bin-00001-of-00003", "train.bin-00002-of-00003"]
    assert (tmp_path / "train.bin-00000-of-00003").read_bytes() == b"12"
