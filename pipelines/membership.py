"""Membership mode: UniRef90 records get the UniRef50 cluster that `uniref50.xml` puts them in.

With `--membership_xml=uniref50.xml.gz` and UniRef90 FASTA as `--input`, every valid record is
joined by its id (`UniRef90_...`) to the cluster table read from the XML: its `cluster_id`
becomes its UniRef50 cluster, so the split (by a hash of the cluster id) keeps whole UniRef50
clusters on one side. A record whose id is in no cluster is rejected as `no_cluster`; an id
that two clusters claim fails the job (UniRef nests UniRef90 clusters in exactly one UniRef50
cluster, so that input is broken).
"""
import hashlib
from typing import Iterable

import apache_beam as beam

from pipelines import tfrecords
from pipelines import transforms
from pipelines import uniref_xml
from pipelines import validation


class MembershipConflictError(ValueError):
    """A UniRef90 id is a member of more than one UniRef50 cluster."""


def assign_clusters(record_id: str, clusters: Iterable[str],
                    proteins: Iterable[validation.Protein]) -> list:
    """The proteins of one id with their UniRef50 cluster, or `no_cluster` Rejecteds."""
    clusters = sorted(set(clusters))
    if len(clusters) > 1:
        raise MembershipConflictError("%s is a member of several UniRef50 clusters: %s" % (
            record_id, ", ".join(clusters)))
    if clusters:
        return [protein._replace(cluster_id=clusters[0]) for protein in proteins]
    return [validation.Rejected(
        protein.id, protein.path, protein.offset, validation.NO_CLUSTER,
        "%s is a member of no cluster in --membership_xml" % protein.id,
        validation.excerpt_head(protein.sequence)) for protein in proteins]


class _AssignClustersFn(beam.DoFn):

    def setup(self):
        self._joined = transforms.counter("records_joined_to_cluster")
        self._rejected = transforms.counter("rejected_" + validation.NO_CLUSTER)

    def process(self, element):
        record_id, grouped = element
        for result in assign_clusters(record_id, grouped["cluster"], grouped["protein"]):
            if isinstance(result, validation.Rejected):
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(transforms.REJECTED, result)
            else:
                self._joined.inc()
                yield result


class JoinClusters(beam.PTransform):
    """`Protein`s -> the same with cluster_id = UniRef50 cluster (main), `no_cluster` Rejecteds.

    `entries` is the PCollection of `uniref_xml.ClusterEntry`s.
    """

    def __init__(self, entries):
        super().__init__()
        self._entries = entries

    def expand(self, proteins):
        members = self._entries | "MemberOf" >> beam.FlatMap(
            lambda entry: [(member, entry.uniref50_id) for member in entry.uniref90_ids])
        keyed = proteins | "ById" >> beam.Map(lambda protein: (protein.id, protein))
        return (
            {"cluster": members, "protein": keyed}
            | "JoinById" >> beam.CoGroupByKey()
            | "Assign" >> beam.ParDo(_AssignClustersFn()).with_outputs(
                transforms.REJECTED, main="proteins"))


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
    return transforms.shard_of(hashlib.sha256(key).digest(), num_shards), (key, line.encode())


class ClusterTable(beam.PTransform):
    """`ClusterEntry`s -> one merged entry per UniRef50 cluster."""

    def expand(self, entries):
        return (entries
                | "ByCluster" >> beam.Map(lambda entry: (entry.uniref50_id, entry))
                | "GroupByCluster" >> beam.GroupByKey()
                | "Merge" >> beam.MapTuple(merge_entries))


def cluster_shard_entry(cluster_id: str, kept: Iterable[transforms.Kept], shuffle_seed: int,
                        num_shards: int):
    """(shard, (shuffle key, framed cluster Example)) of one cluster's train records.

    Members are ordered by id; the cluster's shard and its place in the shard come from
    sha256(sha256(cluster id) + seed), as records' do from their sequence hash.
    """
    members = sorted((k.protein.id, k.protein.sequence) for k in kept)
    payload = tfrecords.cluster_example_bytes(
        cluster_id, [i for i, _ in members], [s for _, s in members])
    key = transforms.shuffle_key(hashlib.sha256(cluster_id.encode()).digest(), shuffle_seed)
    return transforms.shard_of(key, num_shards), (key, tfrecords.frame(payload))


class ClusterShards(beam.PTransform):
    """Train `Kept`s -> one (shard, (key, framed Example)) per cluster, for `WriteShards`."""

    def __init__(self, shuffle_seed: int, num_shards: int):
        super().__init__()
        self._shuffle_seed = shuffle_seed
        self._num_shards = num_shards

    def expand(self, kept):
        seed, num_shards = self._shuffle_seed, self._num_shards
        return (kept
                | "ByCluster" >> beam.Map(lambda k: (k.protein.cluster_id, k))
                | "GroupByCluster" >> beam.GroupByKey()
                | "Frame" >> beam.MapTuple(
                    lambda cluster_id, members: cluster_shard_entry(
                        cluster_id, members, seed, num_shards)))
