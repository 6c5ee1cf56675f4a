"""Statistics of the UniRef job's output and its `manifest.json`.

The manifest is the last file the job writes (through a temporary name, then a rename): its
presence is what marks an output directory as complete. It holds no timestamps, so the same
inputs and flags give the same bytes.

Public API: `write_json_atomically(path, value)`, `sha256_of_file(path)`,
`check_conservation(counts)`, `read_manifest(output_dir)`, `build_manifest(...)`, and the
transform `WriteManifest`, which sums up the job's outputs and writes the manifest last.
"""
import collections
import hashlib
import json
import logging
import math
import sys
import uuid
from importlib import metadata
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import records
from pipelines import writers

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
# Lower edges of the length-histogram bins; the last bin is open-ended.
HISTOGRAM_EDGES = (1, 50, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000,
                   10000, 20000)
LIBRARIES = ("apache-beam", "tensorflow-cpu", "tensorflow", "protobuf", "google-crc32c")


class ConservationError(RuntimeError):
    """The output's counts do not add up to the records read."""


def _empty_stats():
    return {"records": 0, "residues": 0, "lengths": collections.Counter(),
            "composition": collections.Counter()}


class MergeStatistics(beam.CombineFn):
    """Partial statistics ({split: {records, residues, lengths, composition}}, as
    `writers.split_statistics` gives them) -> their total."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, element):
        for split_name, stats in element.items():
            into = accumulator.setdefault(split_name, _empty_stats())
            into["records"] += stats["records"]
            into["residues"] += stats["residues"]
            into["lengths"].update(stats["lengths"])
            into["composition"].update(stats["composition"])
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def percentiles(length_counts: dict[int, int], quantiles=PERCENTILES) -> dict[str, int]:
    """Exact nearest-rank percentiles from a {length: count} histogram.

    The p-th percentile is the smallest length L such that at least p % of records have
    length <= L.
    """
    total = sum(length_counts.values())
    if total == 0:
        return {}
    result, cumulative = {}, 0
    pending = list(quantiles)
    for length in sorted(length_counts):
        cumulative += length_counts[length]
        while pending and cumulative >= math.ceil(pending[0] / 100 * total):
            result["p%d" % pending.pop(0)] = length
    return result


def binned_histogram(length_counts: dict[int, int], edges=HISTOGRAM_EDGES) -> list[dict]:
    """Counts per length bin: [{"min": a, "max": b or None (open-ended), "records": n}]."""
    bins = []
    for i, low in enumerate(edges):
        high = edges[i + 1] - 1 if i + 1 < len(edges) else None
        count = sum(c for length, c in length_counts.items()
                    if length >= low and (high is None or length <= high))
        bins.append({"min": low, "max": high, "records": count})
    return bins


def length_summary(length_counts: dict[int, int]) -> dict:
    """Records, min, max, mean, percentiles and binned histogram of a {length: count} histogram."""
    total = sum(length_counts.values())
    if total == 0:
        return {"records": 0}
    return {
        "records": total,
        "min": min(length_counts),
        "max": max(length_counts),
        "mean": round(sum(l * c for l, c in length_counts.items()) / total, 3),
        "percentiles": percentiles(length_counts),
        "histogram": binned_histogram(length_counts),
    }


def check_conservation(counts: dict) -> None:
    """Raises ConservationError unless records_read = train + validation + duplicates + rejected.

    `counts` holds records_read, train, validation, duplicates and rejected ({reason: count}).
    """
    accounted = (counts["train"] + counts["validation"] + counts["duplicates"]
                 + sum(counts["rejected"].values()))
    if accounted != counts["records_read"]:
        raise ConservationError(
            "records are not conserved: read %d but train %d + validation %d + duplicates %d + "
            "rejected %d = %d" % (
                counts["records_read"], counts["train"], counts["validation"],
                counts["duplicates"], sum(counts["rejected"].values()), accounted))


def library_versions() -> dict[str, str]:
    """Python and the installed versions of the libraries that shape the output bytes."""
    versions = {"python": "%d.%d.%d" % sys.version_info[:3]}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_manifest(
    *,
    release: dict,
    inputs: list[dict],
    records_per_file: dict[str, int],
    rejected: dict[str, int],
    duplicates: int,
    sequence_stats: dict,
    outputs: list[dict],
    flags: dict,
    decontamination: Optional[dict] = None,
    membership: Optional[dict] = None,
) -> dict:
    """Assembles the manifest and checks that the counts are conserved (ConservationError).

    `decontamination` and `membership` (from `decontamination_section`, `membership_section`)
    are added when the run had them.
    """
    written = collections.Counter()
    for output in outputs:
        written[output["split"]] += output["records"]
    rejected = {reason: rejected.get(reason, 0) for reason in records.REASONS}
    if written["rejected"] != sum(rejected.values()):
        raise ConservationError("rejected shards hold %d records but %d were rejected" % (
            written["rejected"], sum(rejected.values())))
    counts = {
        "records_read": sum(records_per_file.values()),
        "train": written["train"],
        "validation": written["validation"],
        "duplicates": duplicates,
        "rejected": rejected,
        "rejected_total": sum(rejected.values()),
    }
    check_conservation(counts)
    for split in ("train", "validation"):
        stated = sequence_stats.get(split, _empty_stats())["records"]
        if stated != written[split]:
            raise ConservationError("%s shards hold %d records but statistics saw %d" % (
                split, written[split], stated))
    all_lengths, all_composition = collections.Counter(), collections.Counter()
    for stats in sequence_stats.values():
        all_lengths.update(stats["lengths"])
        all_composition.update(stats["composition"])
    residues = sum(all_composition.values())
    sections = {name: value for name, value in (
        ("decontamination", decontamination), ("membership", membership)) if value is not None}
    return {
        **sections,
        "format_version": FORMAT_VERSION,
        "release": release,
        "inputs": [dict(entry, records=records_per_file.get(entry["path"], 0))
                   for entry in inputs],
        "counts": counts,
        "residues": {
            "train": sequence_stats.get("train", _empty_stats())["residues"],
            "validation": sequence_stats.get("validation", _empty_stats())["residues"],
            "total": residues,
        },
        "lengths": {
            "all": length_summary(all_lengths),
            "train": length_summary(sequence_stats.get("train", _empty_stats())["lengths"]),
            "validation": length_summary(
                sequence_stats.get("validation", _empty_stats())["lengths"]),
        },
        "composition": {
            chr(residue): {
                "residues": all_composition[chr(residue)],
                "fraction": round(all_composition[chr(residue)] / residues, 6) if residues else 0,
            } for residue in records.ALPHABET},
        "flags": flags,
        "versions": library_versions(),
        "outputs": sorted(outputs, key=lambda o: o["name"]),
    }


IDENTITY_DEFINITION = ("identical residues / alignment columns (MMseqs2 fident, "
                       "--seq-id-mode 0)")
COVERAGE_DEFINITION = ("fraction of the benchmark (or validation) sequence's residues inside the "
                       "alignment (MMseqs2 --cov-mode 1, the benchmark being the target)")


def decontamination_section(config: dict, benchmarks: list[dict],
                            removal_counts: dict, rejected: dict) -> Optional[dict]:
    """The manifest's `decontamination`: thresholds, definitions, MMseqs2 version, and per
    benchmark file (path, size, md5, records) how many kept sequences it removed, exactly or by
    similarity, and how many duplicates those stood for (counted under `duplicates`).

    `config` holds mmseqs_version, min_identity, min_coverage, validation (bool) and
    benchmark_records ({path: records}); None when the run did not decontaminate.
    `removal_counts` maps (source, method or "duplicates_of_removed") to counts. Raises
    ConservationError when the per-file counts do not add up to the overlap rejections.
    """
    if not config:
        return None

    def removals(source):
        exact = removal_counts.get((source, "exact"), 0)
        similar = removal_counts.get((source, "mmseqs"), 0)
        return {"removed": exact + similar, "removed_exact": exact, "removed_similar": similar,
                "duplicates_of_removed": removal_counts.get((source, "duplicates_of_removed"), 0)}

    files = [dict(b, records=config["benchmark_records"][b["path"]], **removals(b["path"]))
             for b in benchmarks]
    stated = sum(f["removed"] for f in files)
    if stated != rejected.get(records.BENCHMARK_OVERLAP, 0):
        raise ConservationError("benchmark files removed %d records but %d were rejected as %s" % (
            stated, rejected.get(records.BENCHMARK_OVERLAP, 0), records.BENCHMARK_OVERLAP))
    section = {
        "mmseqs_version": config["mmseqs_version"],
        "min_identity": config["min_identity"],
        "min_coverage": config["min_coverage"],
        "identity": IDENTITY_DEFINITION,
        "coverage": COVERAGE_DEFINITION,
        "benchmarks": files,
    }
    if config["validation"]:
        section["validation"] = removals("validation")
    return section


def membership_section(membership: Optional[dict], cluster_counts: dict,
                       rejected: dict) -> Optional[dict]:
    """The manifest's `membership`: the XML (path, size, md5, level, version, release date),
    its clusters and UniRef90 ids, and the records rejected as in no cluster."""
    if membership is None:
        return None
    return dict(membership, clusters=cluster_counts.get("clusters", 0),
                uniref90_ids=cluster_counts.get("uniref90_ids", 0),
                records_without_cluster=rejected.get(records.NO_CLUSTER, 0))


def write_json_atomically(path: str, value: dict) -> None:
    """Writes `value` as sorted, indented JSON to a temporary name, then renames it to `path`."""
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    temp_path = FileSystems.join(
        directory, "%s%s-%s" % (writers.TEMP_PREFIX, name, uuid.uuid4().hex))
    with FileSystems.create(temp_path) as out:
        out.write((json.dumps(value, indent=2, sort_keys=True) + "\n").encode())
    FileSystems.rename([temp_path], [path])


def sha256_of_file(path: str) -> str:
    """Hex sha256 of a file's stored bytes (local or remote), as the manifest lists outputs."""
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(output_dir: str) -> dict:
    """The manifest of a complete output directory."""
    with FileSystems.open(FileSystems.join(output_dir, MANIFEST_NAME)) as f:
        return json.loads(f.read())


class _WriteManifestFn(beam.DoFn):
    """Writes manifest.json once every output is written (the summaries are a side input)."""

    def __init__(self, output_dir, pinned, flags, decontamination):
        self._output_dir = output_dir
        self._pinned = pinned
        self._flags = flags
        self._decontamination = decontamination

    def process(self, unused_element, summaries):
        rejected = summaries["rejected"]
        value = build_manifest(
            release=self._pinned.release, inputs=self._pinned.inputs,
            records_per_file=summaries["records_per_file"], rejected=rejected,
            duplicates=summaries["duplicates"], sequence_stats=summaries["sequence_stats"],
            outputs=summaries["outputs"], flags=self._flags,
            decontamination=decontamination_section(
                self._decontamination, self._pinned.benchmarks, summaries["removed"], rejected),
            membership=membership_section(
                self._pinned.membership, summaries["clusters"], rejected))
        path = FileSystems.join(self._output_dir, MANIFEST_NAME)
        write_json_atomically(path, value)
        logging.info("wrote %s", path)
        yield path


def _removal_keys(removal):
    return [((removal.match.source, removal.match.method), 1),
            ((removal.match.source, "duplicates_of_removed"), removal.num_duplicates)]


def _cluster_keys(entry):
    return [("clusters", 1), ("uniref90_ids", len(entry.uniref90_ids))]


class WriteManifest(beam.PTransform):
    """Sums up the job's outputs and writes `manifest.json`, after everything else.

    Takes a dict of PCollections: `outputs` (the written files' manifest entries),
    `records_per_file` ((path, records read)), `rejected` (`Rejected`s), `duplicates` (ints),
    `sequence_stats` (partial statistics), `removed` (`decontaminate.Removal`s), `clusters`
    (merged `ClusterEntry`s) and `done` (anything the manifest must wait for, e.g. the deletion
    of spill files). Each becomes one summary; the manifest's DoFn takes them as one side input.
    """

    def __init__(self, output_dir: str, pinned, flags: dict, decontamination: dict):
        super().__init__()
        self._fn = _WriteManifestFn(output_dir, pinned, flags, decontamination)

    def expand(self, parts):
        def sum_per_key(keys):
            return beam.FlatMap(keys) | beam.CombinePerKey(sum) | beam.combiners.ToDict()

        summaries = {
            "outputs": beam.combiners.ToList(),
            "records_per_file": beam.CombinePerKey(sum) | beam.combiners.ToDict(),
            "rejected": sum_per_key(lambda r: [(r.reason, 1)]),
            "duplicates": beam.CombineGlobally(sum),
            "sequence_stats": beam.CombineGlobally(MergeStatistics()),
            "removed": sum_per_key(_removal_keys),
            "clusters": sum_per_key(_cluster_keys),
            "done": beam.combiners.Count.Globally(),
        }
        named = [parts[name] | "Summarize_" + name >> combine
                 | "Name_" + name >> beam.Map(lambda value, name=name: (name, value))
                 for name, combine in summaries.items()]
        together = named | "Summaries" >> beam.Flatten() | "AsDict" >> beam.combiners.ToDict()
        return (parts["outputs"].pipeline
                | "Trigger" >> beam.Create([None])
                | "Write" >> beam.ParDo(self._fn, beam.pvalue.AsSingleton(together)))
