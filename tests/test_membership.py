"""UniRef XML reader (streamed), the membership join, cluster table and cluster shards."""
import gzip
import io
import json
import os
import tracemalloc

import apache_beam as beam
import pytest
from apache_beam.io import source_test_utils
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipelines import compression
from pipelines import manifest
from pipelines import membership
from pipelines import records
from pipelines import uniref
from pipelines import uniref_xml

RELEASE_DIR = os.path.join("tests", "data", "uniref_release")
XML = os.path.join(RELEASE_DIR, "uniref50.xml.gz")
FASTA = os.path.join(RELEASE_DIR, "uniref90.fasta.gz")
METALINK = os.path.join(RELEASE_DIR, "RELEASE.metalink")
NS = 'xmlns="http://uniprot.org/uniref"'


def _fasta_ids():
    with gzip.open(FASTA, "rt") as f:
        return sorted(line[1:].split()[0] for line in f if line.startswith(">"))


def _entries():
    with gzip.open(XML, "rb") as stream:
        return list(uniref_xml.iter_entries(stream, XML))


def test_fixture_entries_cover_every_uniref90_record_once():
    entries = _entries()
    assert len(entries) == 12
    members = [m for e in entries for m in e.uniref90_ids]
    assert sorted(members) == _fasta_ids()  # every UniRef90 record in exactly one cluster
    first = entries[0]
    assert first == uniref_xml.ClusterEntry(
        "UniRef50_Q7VR69", "UniRef90_Q7VR69", ("UniRef90_Q7VR69",))
    assert all(e.representative_uniref90_id in e.uniref90_ids for e in entries)
    assert sorted(len(e.uniref90_ids) for e in entries) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    # The UniParc member (dbReference type "UniParc ID") is read like the others.
    assert b'type="UniParc ID"' in gzip.open(XML).read()


def test_source_reads_the_same_entries_and_is_not_splittable():
    source = uniref_xml.UniRefXmlSource(XML)
    assert source_test_utils.read_from_source(source) == _entries()
    assert len(list(source.split(100))) == 1


def test_uniref90_xml_entries_name_their_uniref50_cluster():
    document = ('<UniRef90 %s version="2024_06"><entry id="UniRef90_P1"><representativeMember>'
                '<dbReference type="UniProtKB ID" id="A_B"><property type="UniRef50 ID" '
                'value="UniRef50_P9"/></dbReference></representativeMember></entry></UniRef90>'
                % NS)
    entries = list(uniref_xml.iter_entries(io.BytesIO(document.encode()), "uniref90.xml"))
    assert entries == [uniref_xml.ClusterEntry("UniRef50_P9", "", ("UniRef90_P1",))]
    merged = membership.merge_entries("UniRef50_P9", entries + [
        uniref_xml.ClusterEntry("UniRef50_P9", "", ("UniRef90_P0",))])
    assert merged.uniref90_ids == ("UniRef90_P0", "UniRef90_P1")


def test_malformed_and_truncated_xml_fail_naming_file_and_entry(tmp_path):
    document = ('<UniRef50 %s version="x"><entry id="UniRef50_BAD"><representativeMember>'
                '<dbReference type="UniProtKB ID" id="A"><property type="UniRef100 ID" '
                'value="UniRef100_A"/></dbReference></representativeMember></entry></UniRef50>'
                % NS)
    with pytest.raises(uniref_xml.UniRefXmlError,
                       match=r"bad\.xml: entry UniRef50_BAD: the representative has no UniRef90 ID"):
        list(uniref_xml.iter_entries(io.BytesIO(document.encode()), "bad.xml"))
    with pytest.raises(uniref_xml.UniRefXmlError, match="root element is <metalink>"):
        list(uniref_xml.iter_entries(open(METALINK, "rb"), METALINK))
    data = open(XML, "rb").read()
    cut = tmp_path / "uniref50.xml.gz"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(compression.TruncatedInputError,
                       match=r"uniref50\.xml\.gz is truncated .* last complete entry read: UniRef50_"):
        source_test_utils.read_from_source(uniref_xml.UniRefXmlSource(str(cut)))


class _GeneratedXml(io.RawIOBase):
    """A UniRef50 document of `count` entries, generated as it is read (never held whole)."""

    def __init__(self, count, entry):
        super().__init__()
        self._parts = iter([b'<UniRef50 %s version="big">\n' % NS.encode()]
                           + [None] * count + [b"</UniRef50>\n"])
        self._entry = entry
        self._index = 0
        self._pending = b""

    def readable(self):
        return True

    def readinto(self, buffer):
        while len(self._pending) < len(buffer):
            part = next(self._parts, b"")
            if part is None:
                part = self._entry.replace(b"@", b"%08d" % self._index)
                self._index += 1
            if not part:
                break
            self._pending += part
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def test_reader_streams_in_bounded_memory():
    members = "".join(
        '<member><dbReference type="UniProtKB ID" id="M@_%d"><property type="UniRef90 ID" '
        'value="UniRef90_M@_%d"/><property type="UniRef100 ID" value="UniRef100_M@_%d"/>'
        '</dbReference></member>' % (i, i, i) for i in range(5))
    entry = ('<entry id="UniRef50_@"><representativeMember><dbReference type="UniProtKB ID" '
             'id="R@"><property type="UniRef90 ID" value="UniRef90_R@"/></dbReference><sequence '
             'length="300">%s</sequence></representativeMember>%s</entry>\n' % (
                 "MKV" * 100, members)).encode()
    count = 8_000  # ~10 MB of XML
    tracemalloc.start()
    try:
        seen = sum(1 for _ in uniref_xml.iter_entries(io.BufferedReader(
            _GeneratedXml(count, entry)), "generated.xml"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert len(entry) * count > 8e6 and peak < 1e6, peak


def _protein(record_id, sequence=b"MKV"):
    return records.Record(record_id, record_id, sequence, records.sequence_hash(sequence),
                              None, None, "in.fasta", len(record_id))


def test_join_bucket_joins_rejects_and_refuses_conflicts():
    joined, rejected = membership.join_bucket(
        [("UniRef90_A", "UniRef50_X"), ("UniRef90_A", "UniRef50_X")],
        [_protein("UniRef90_A"), _protein("UniRef90_B")])
    assert joined == [_protein("UniRef90_A")._replace(cluster_id="UniRef50_X")]
    assert [(r.id, r.reason) for r in rejected] == [("UniRef90_B", records.NO_CLUSTER)]
    with pytest.raises(membership.MembershipConflictError,
                       match="UniRef90_C is a member of several UniRef50 clusters: UniRef50_X, "
                             "UniRef50_Y"):
        membership.join_bucket([("UniRef90_C", "UniRef50_Y"), ("UniRef90_C", "UniRef50_X")], [])


def test_join_clusters_transform():
    entries = [uniref_xml.ClusterEntry("UniRef50_X", "UniRef90_A", ("UniRef90_A", "UniRef90_B"))]
    with test_pipeline.TestPipeline(runner=uniref.DEFAULT_RUNNER) as pipeline:
        joined = (pipeline | "Proteins" >> beam.Create(
            [[_protein("UniRef90_A"), _protein("UniRef90_B", b"MKW")], [_protein("UniRef90_Z")]])
            | membership.JoinClusters(pipeline | "Entries" >> beam.Create(entries), 3))
        assert_that(joined[records.RECORDS] | "Pairs" >> beam.FlatMap(
            lambda batch: [(p.id, p.cluster_id) for p in batch]),
            equal_to([("UniRef90_A", "UniRef50_X"), ("UniRef90_B", "UniRef50_X")]),
            label="CheckJoined")
        assert_that(joined[records.REJECTED] | "Reasons" >> beam.Map(lambda r: (r.id, r.reason)),
                    equal_to([("UniRef90_Z", records.NO_CLUSTER)]), label="CheckRejected")


def _examples(directory, prefix):
    tf = pytest.importorskip("tensorflow")
    names = sorted(n for n in os.listdir(directory) if n.startswith(prefix + ".tfrecord-"))
    dataset = tf.data.TFRecordDataset([os.path.join(directory, n) for n in names])
    return [tf.train.Example.FromString(r.numpy()).features.feature for r in dataset]


MEMBERSHIP_FLAGS = ["--membership_xml=" + XML, "--release_metadata=" + METALINK,
                    "--allow_unlisted_inputs", "--validation_fraction=0.3",
                    "--num_train_shards=2", "--num_validation_shards=1", "--write_cluster_shards",
                    "--num_cluster_shards=2", "--num_cluster_table_shards=2"]


@pytest.fixture(scope="module")
def membership_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("membership")
    orphan = directory / "orphans.fasta"  # a UniRef90 record that no UniRef50 cluster lists
    orphan.write_bytes(b">UniRef90_Q6GZX4 Putative transcription factor 001R n=1 RepID=001R_FRG3G\n"
                       b"MAFSAEDVLKEYDRRRRMEALLLSLYYPNDRKLLDYKEWSPPRVQVECPKAPVEWNNPPSEKGLIVGHFSG\n")
    out = str(directory / "out")
    value = uniref.run(["--input=" + FASTA, "--input=" + str(orphan), "--output_dir=" + out]
                       + MEMBERSHIP_FLAGS)
    return out, value, str(orphan)


def test_membership_job_assigns_uniref50_clusters(membership_run):
    out, value, _ = membership_run
    cluster_of = {m: e.uniref50_id for e in _entries() for m in e.uniref90_ids}
    train, held_out = _examples(out, "train"), _examples(out, "validation")
    records = {f["id"].bytes_list.value[0].decode(): f["cluster_id"].bytes_list.value[0].decode()
               for f in train + held_out}
    assert records == cluster_of  # every UniRef90 record got its UniRef50 cluster
    validation_clusters = {f["cluster_id"].bytes_list.value[0].decode() for f in held_out}
    assert validation_clusters and not validation_clusters & {
        f["cluster_id"].bytes_list.value[0].decode() for f in train}
    assert open(os.path.join(out, "validation_clusters.txt")).read() == "".join(
        c + "\n" for c in sorted(validation_clusters))
    counts = value["counts"]
    assert (counts["records_read"], counts["rejected"]["no_cluster"]) == (43, 1)
    assert counts["train"] + counts["validation"] == 42
    info = value["membership"]
    assert (info["version"], info["level"], info["clusters"], info["uniref90_ids"],
            info["records_without_cluster"]) == ("2024_06", "UniRef50", 12, 42, 1)
    assert value["release"]["release"] == "2024_06"


def test_membership_job_writes_table_cluster_shards_and_rejections(membership_run):
    out, value, orphan = membership_run
    table = "".join(open(os.path.join(out, n)).read() for n in sorted(os.listdir(out))
                    if n.startswith("clusters.tsv-"))
    rows = sorted(line.split("\t") for line in table.splitlines())
    assert rows == sorted([e.uniref50_id, e.representative_uniref90_id, str(len(e.uniref90_ids)),
                           ",".join(e.uniref90_ids)] for e in _entries())
    clusters = _examples(out, "train_clusters")
    members = {c["cluster_id"].bytes_list.value[0]: list(c["member_ids"].bytes_list.value)
               for c in clusters}
    by_cluster = {}
    for f in _examples(out, "train"):
        by_cluster.setdefault(f["cluster_id"].bytes_list.value[0], []).append(
            f["id"].bytes_list.value[0])
    assert members == {c: sorted(ids) for c, ids in by_cluster.items()}
    assert all(c["num_members"].int64_list.value[0] == len(c["member_sequences"].bytes_list.value)
               for c in clusters)
    rejected = [json.loads(line) for n in sorted(os.listdir(out)) if n.startswith("rejected.")
                for line in open(os.path.join(out, n))]
    assert [(r["id"], r["reason"], r["path"]) for r in rejected] == [
        ("UniRef90_Q6GZX4", "no_cluster", orphan)]
    listed = {o["name"] for o in value["outputs"]}
    assert set(os.listdir(out)) == listed | {manifest.MANIFEST_NAME}


def test_membership_job_is_deterministic(membership_run, tmp_path):
    out, _, orphan = membership_run
    again = str(tmp_path / "again")
    uniref.run(["--input=" + FASTA, "--input=" + orphan, "--output_dir=" + again]
               + MEMBERSHIP_FLAGS)
    read = lambda d: {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}
    assert read(again) == read(out)


def test_cluster_shards_need_membership_mode(tmp_path):
    with pytest.raises(ValueError, match="--write_cluster_shards needs --membership_xml"):
        uniref.run(["--input=" + FASTA, "--output_dir=" + str(tmp_path),
                    "--write_cluster_shards"])
