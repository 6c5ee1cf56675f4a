"""Statistics of the UniRef job's output and its `manifest.json`.

The manifest is the last file the job writes (through a temporary name, then a rename): its
presence is what marks an output directory as complete. It holds no timestamps, so the same
inputs and flags give the same bytes.
"""
import collections
import hashlib
import json
import math
import sys
import uuid
import xml.etree.ElementTree as ElementTree
from importlib import metadata
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import transforms
from pipelines import validation

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
# Lower edges of the length-histogram bins; the last bin is open-ended.
HISTOGRAM_EDGES = (1, 50, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000,
                   10000, 20000)
LIBRARIES = ("apache-beam", "tensorflow-cpu", "tensorflow", "protobuf", "google-crc32c")


class ConservationError(RuntimeError):
    """The output's counts do not add up to the records read."""


class ReleaseMismatchError(ValueError):
    """An input file does not match the release metadata (size, md5, or not listed)."""


class SequenceStatsFn(beam.CombineFn):
    """(split, sequence) -> per split: records, residues, {length: count}, {residue: count}."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, element):
        split, sequence = element
        stats = accumulator.get(split)
        if stats is None:
            stats = accumulator[split] = _empty_stats()
        stats["records"] += 1
        stats["residues"] += len(sequence)
        stats["lengths"][len(sequence)] += 1
        pending = stats.setdefault(_PENDING, [])
        pending.append(sequence)
        if len(pending) >= _COMPOSITION_BATCH:
            _count_composition(stats)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            for split, stats in accumulator.items():
                _count_composition(stats)
                into = merged.setdefault(split, _empty_stats())
                into["records"] += stats["records"]
                into["residues"] += stats["residues"]
                into["lengths"].update(stats["lengths"])
                into["composition"].update(stats["composition"])
        return merged

    def extract_output(self, accumulator):
        for stats in accumulator.values():
            _count_composition(stats)
        return accumulator


# Sequences wait in the accumulator and their residues are counted a batch at a time: one
# `bytes.count` per letter of the alphabet per ~1 MB batch rather than per record (this was the
# costliest per-record step of the statistics).
_PENDING = "pending"
_COMPOSITION_BATCH = 2048


def _count_composition(stats: dict) -> None:
    """Adds the residues of the pending sequences of `stats` to its composition; forgets them."""
    batch = b"".join(stats.pop(_PENDING, ()))
    composition = stats["composition"]
    for residue in validation.ALPHABET:
        count = batch.count(residue)
        if count:
            composition[chr(residue)] += count


def _empty_stats():
    return {"records": 0, "residues": 0, "lengths": collections.Counter(),
            "composition": collections.Counter()}


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


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_release_metadata(path: str) -> dict:
    """The release named by a UniRef XML (`<UniRef50 version="...">`) or a RELEASE.metalink.

    Returns {"release": str, "source": path, "files": {name: {"size": int, "md5": str}}}; the
    files are those a metalink lists (empty for a UniRef XML). For a UniRef XML it also holds
    "level" (the root element, e.g. `UniRef50`) and "release_date" (its `releaseDate`). The XML is
    streamed: only its first element is parsed, so a 30 GB `uniref50.xml.gz` is fine.
    """
    files, release, extra = {}, None, {}
    with FileSystems.open(path) as stream:
        events = ElementTree.iterparse(stream, events=("start", "end"))
        _, root = next(events)
        if _local_name(root.tag).startswith("UniRef"):
            release = root.get("version")
            extra = {"level": _local_name(root.tag), "release_date": root.get("releaseDate")}
        elif _local_name(root.tag) == "metalink":
            for event, element in events:
                if event != "end":
                    continue
                name = _local_name(element.tag)
                if name == "version" and release is None:
                    release = (element.text or "").strip()
                elif name == "file":
                    entry = {}
                    for child in element.iter():
                        if _local_name(child.tag) == "size":
                            entry["size"] = int(child.text)
                        elif _local_name(child.tag) == "hash" and child.get("type") == "md5":
                            entry["md5"] = child.text.strip().lower()
                    files[element.get("name")] = entry
    if not release:
        raise ValueError("%s: no release version found (expected a UniRef XML root with a "
                         "version attribute, or a metalink with a <version> element)" % path)
    return dict(extra, release=release, source=path, files=files)


def md5_of_file(path: str) -> str:
    """Hex md5 of a file's stored bytes (local or remote, never decompressed), in 8 MiB blocks."""
    digest = hashlib.md5()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_inputs(patterns: list[str], metalink_files: Optional[dict] = None,
                    allow_unlisted: bool = False, flag: str = "--input") -> list[dict]:
    """The input files (path, size, md5), in pattern order then path order.

    Fails when a pattern matches nothing or two patterns match the same file. With
    `metalink_files` (a metalink's {base name: {"size", "md5"}}), every matched file must be
    listed there (unless `allow_unlisted`) and have that size and md5 (a ReleaseMismatchError
    naming the file). The md5 of a local file is always computed; a remote file's only when a
    metalink lists it (it is then streamed through, which takes minutes for UniRef90).
    """
    inputs, seen = [], set()
    for pattern in patterns:
        matched = sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path)
        if not matched:
            raise ValueError("%s=%s matches no file" % (flag, pattern))
        for file in matched:
            if file.path in seen:
                raise ValueError("%s is matched by more than one %s pattern" % (file.path, flag))
            seen.add(file.path)
            entry = {"path": file.path, "size_bytes": file.size_in_bytes}
            expected = (metalink_files or {}).get(file.path.rsplit("/", 1)[-1])
            if metalink_files and expected is None and not allow_unlisted:
                raise ReleaseMismatchError(
                    "%s (%s) is not listed in the release metadata; pass --allow_unlisted_inputs "
                    "to read it anyway" % (file.path, flag))
            if expected and "size" in expected and expected["size"] != file.size_in_bytes:
                raise ReleaseMismatchError("%s: size is %d but the release metadata says %d" % (
                    file.path, file.size_in_bytes, expected["size"]))
            if "://" not in file.path or (expected and "md5" in expected):
                entry["md5"] = md5_of_file(file.path)
            if expected and "md5" in expected and expected["md5"] != entry["md5"]:
                raise ReleaseMismatchError("%s: md5 is %s but the release metadata says %s" % (
                    file.path, entry["md5"], expected["md5"]))
            inputs.append(entry)
    return inputs


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
    rejected = {reason: rejected.get(reason, 0) for reason in validation.REASONS}
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
            } for residue in validation.ALPHABET},
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
    if stated != rejected.get(validation.BENCHMARK_OVERLAP, 0):
        raise ConservationError("benchmark files removed %d records but %d were rejected as %s" % (
            stated, rejected.get(validation.BENCHMARK_OVERLAP, 0), validation.BENCHMARK_OVERLAP))
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
                records_without_cluster=rejected.get(validation.NO_CLUSTER, 0))


def write_json_atomically(path: str, value: dict) -> None:
    """Writes `value` as sorted, indented JSON to a temporary name, then renames it to `path`."""
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    temp_path = FileSystems.join(
        directory, "%s%s-%s" % (transforms.TEMP_PREFIX, name, uuid.uuid4().hex))
    with FileSystems.create(temp_path) as out:
        out.write((json.dumps(value, indent=2, sort_keys=True) + "\n").encode())
    FileSystems.rename([temp_path], [path])


def read_manifest(output_dir: str) -> dict:
    """The manifest of a complete output directory."""
    with FileSystems.open(FileSystems.join(output_dir, MANIFEST_NAME)) as f:
        return json.loads(f.read())
