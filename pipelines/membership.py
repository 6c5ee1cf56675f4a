"""Membership mode: UniRef90 records get the UniRef50 cluster that `uniref50.xml` puts them in.

With `--membership_xml=uniref50.xml.gz` and UniRef90 FASTA as `--input`, every valid record is
joined by its id (`UniRef90_...`) to the memberships read from the XML (per bucket of ids): its `cluster_id`
becomes its UniRef50 cluster, so the split (by a hash of the cluster id) keeps whole UniRef50
clusters on one side. A record whose id is in no cluster is rejected as `no_cluster`; an id
that two clusters claim fails the job (UniRef nests UniRef90 clusters in exactly one UniRef50
cluster, so that input is broken).
"""
import collections
import hashlib
from typing import Iterable

import apache_beam as beam

from pipelines import dedup
from pipelines import records
from pipelines import split
from pipelines import tfrecords
from pipelines import uniref_xml
from pipelines import worker
from pipelines import writers

_ENTRIES = 0
_RECORDS = 1


class MembershipConflictError(ValueError):
    """A UniRef90 id is a member of more than one UniRef50 cluster."""


def join_bucket(memberships: Iterable[tuple[str, str]],
                bucket_records: Iterable[records.Record]) -> tuple[list, list]:
    """The (UniRef90 id, UniRef50 cluster) pairs and the records of one id bucket -> (the records
    with their UniRef50 cluster as cluster_id, `no_cluster` Rejecteds).

    Raises MembershipConflictError for an id that several clusters claim.
    """
    clusters = collections.defaultdict(set)
    for member, cluster in memberships:
        clusters[member].add(cluster)
    for member, found in clusters.items():
        if len(found) > 1:
            raise MembershipConflictError("%s is a member of several UniRef50 clusters: %s" % (
                member, ", ".join(sorted(found))))
    joined, rejected = [], []
    for record in bucket_records:
        found = clusters.get(record.id)
        if found:
            joined.append(record._replace(cluster_id=next(iter(found))))
        else:
            rejected.append(records.rejected_record(
                record, records.NO_CLUSTER,
                "%s is a member of no cluster in --membership_xml" % record.id))
    return joined, rejected


class _JoinBucketFn(beam.DoFn):

    def setup(self):
        self._joined = worker.counter("records_joined_to_cluster")
        self._rejected = worker.counter("rejected_" + records.NO_CLUSTER)

    def process(self, element):
        _, tagged = element
        memberships = (pair for tag, chunk in tagged if tag == _ENTRIES for pair in chunk)
        bucket_records = [r for tag, chunk in tagged if tag == _RECORDS for r in chunk]
        joined, rejected = join_bucket(memberships, bucket_records)
        self._joined.inc(len(joined))
        self._rejected.inc(len(rejected))
        for record in rejected:
            yield beam.pvalue.TaggedOutput(records.REJECTED, record)
        if joined:
            yield joined


def _by_id_bucket(items, id_of, tag: int, num_buckets: int):
    grouped = collections.defaultdict(list)
    for item in items:
        grouped[dedup.id_bucket(id_of(item), num_buckets)].append(item)
    return [(bucket, (tag, chunk)) for bucket, chunk in grouped.items()]


class JoinClusters(beam.PTransform):
    """Batches of `Record`s -> batches (one per id bucket) of the same with cluster_id = their
    UniRef50 cluster (`records`), and `no_cluster` Rejecteds (`rejected`).

    `entries` is the PCollection of `uniref_xml.ClusterEntry`s. Records and memberships meet
    by a hash of the id, `num_buckets` buckets, each joined on its own.
    """

    def __init__(self, entries, num_buckets: int):
        super().__init__()
        self._entries = entries
        self._num_buckets = num_buckets

    def expand(self, batches):
        num_buckets = self._num_buckets
        members = self._entries | "MembersByIdBucket" >> beam.FlatMap(
            lambda entry: _by_id_bucket([(m, entry.uniref50_id) for m in entry.uniref90_ids],
                                        lambda pair: pair[0], _ENTRIES, num_buckets))
        keyed = batches | "RecordsByIdBucket" >> beam.FlatMap(
            _by_id_bucket, lambda record: record.id, _RECORDS, num_buckets)
        return (
            (members, keyed)
            | "Flatten" >> beam.Flatten()
            | "GroupByIdBucket" >> beam.GroupByKey()
            | "Join" >> beam.ParDo(_JoinBucketFn()).with_output_types(
                records.RecordBatch).with_outputs(records.REJECTED, main=records.RECORDS))


def merge_entries(uniref50_id: str,
                  entries: Iterable[uniref_xml.ClusterEntry]) -> uniref_xml.ClusterEntry:
    """One cluster's entries as one (a `uniref90.xml` has one entry per UniRef90 member)."""
    entries = list(entries)
    representatives = sorted({e.representative_uniref90_id for e in entries} - {""})
    members = sorted({member for e in entries for member in e.uniref90_ids})
    return uniref_xml.ClusterEntry(uniref50_id, representatives[0] if representatives else "",
                                   tuple(members))


def cluster_table_entry(entry: uniref_xml.ClusterEntry, num_shards: int):
    """(shard, (sort key, line)) of the cluster table: UniRef50 id, representative UniRef90 id,
    number of UniRef90 members, and their ids joined by commas."""
    line = "%s\t%s\t%d\t%s\n" % (entry.uniref50_id, entry.representative_uniref90_id,
                                 len(entry.uniref90_ids), ",".join(entry.uniref90_ids))
    key = entry.uniref50_id.encode()
    return split.shard_of(hashlib.sha256(key).digest(), num_shards), (key, line.encode())


class ClusterTable(beam.PTransform):
    """`ClusterEntry`s -> one merged entry per UniRef50 cluster."""

    def expand(self, entries):
        return (entries
                | "ByCluster" >> beam.Map(lambda entry: (entry.uniref50_id, entry))
                | "GroupByCluster" >> beam.GroupByKey()
                | "Merge" >> beam.MapTuple(merge_entries))


class Membership(beam.PTransform):
    """Membership mode: batches of `Record`s -> {"records": the same with their UniRef50
    cluster, "rejected": `no_cluster`s, "outputs": the cluster table's files (`clusters.tsv-*`),
    "clusters": one merged `ClusterEntry` per UniRef50 cluster}."""

    def __init__(self, xml_pattern: str, output_dir: str, num_table_shards: int,
                 num_buckets: int):
        super().__init__()
        self._xml_pattern = xml_pattern
        self._output_dir = output_dir
        self._num_table_shards = num_table_shards
        self._num_buckets = num_buckets

    def expand(self, batches):
        entries = (batches.pipeline
                   | "ReadXml" >> beam.io.Read(uniref_xml.UniRefXmlSource(self._xml_pattern))
                   | "SpreadEntries" >> beam.Reshuffle())
        joined = batches | "JoinClusters" >> JoinClusters(entries, self._num_buckets)
        table = entries | "ClusterTable" >> ClusterTable()
        written = (table
                   | "ShardClusterTable" >> beam.Map(cluster_table_entry, self._num_table_shards)
                   | "WriteClusterTable" >> writers.WriteShards(
                       self._output_dir, writers.CLUSTER_TABLE, writers.TSV_SUFFIX,
                       self._num_table_shards))
        return {"records": joined[records.RECORDS], "rejected": joined[records.REJECTED],
                "outputs": written, "clusters": table}


def cluster_shard_entry(cluster_id: str, members: Iterable[records.Record], shuffle_seed: int,
                        num_shards: int):
    """(shard, (shuffle key, framed cluster Example)) of one cluster's train records.

    Members are ordered by id; the cluster's shard and its place in the shard come from
    sha256(sha256(cluster id) + seed), as records' do from their sequence hash.
    """
    members = sorted((r.id, r.sequence) for r in members)
    payload = tfrecords.cluster_example(
        cluster_id, [i for i, _ in members], [s for _, s in members])
    key = split.shuffle_key(hashlib.sha256(cluster_id.encode()).digest(), shuffle_seed)
    return split.shard_of(key, num_shards), (key, tfrecords.frame(payload))


class WriteClusterShards(beam.PTransform):
    """Train `Record`s -> `train_clusters.tfrecord-*`, one Example per cluster (its manifest
    entries)."""

    def __init__(self, output_dir: str, shuffle_seed: int, num_shards: int):
        super().__init__()
        self._output_dir = output_dir
        self._shuffle_seed = shuffle_seed
        self._num_shards = num_shards

    def expand(self, train_records):
        seed, num_shards = self._shuffle_seed, self._num_shards
        return (train_records
                | "ByCluster" >> beam.Map(lambda r: (r.cluster_id, r))
                | "GroupByCluster" >> beam.GroupByKey()
                | "Frame" >> beam.MapTuple(
                    lambda cluster_id, members: cluster_shard_entry(
                        cluster_id, members, seed, num_shards))
                | "Write" >> writers.WriteShards(
                    self._output_dir, writers.TRAIN_CLUSTERS, writers.TFRECORD_SUFFIX,
                    num_shards))
