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


class SequenceStatsFn(beam.CombineFn):
    """(split, sequence) -> per split: records, residues, {length: count}, {residue: count}."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, element):
        split, sequence = element
        stats = accumulator.setdefault(split, _empty_stats())
        stats["records"] += 1
        stats["residues"] += len(sequence)
        stats["lengths"][len(sequence)] += 1
        composition = stats["composition"]
        for residue in validation.ALPHABET:
            count = sequence.count(residue)
            if count:
                composition[chr(residue)] += count
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            for split, stats in accumulator.items():
                into = merged.setdefault(split, _empty_stats())
                into["records"] += stats["records"]
                into["residues"] += stats["residues"]
                into["lengths"].update(stats["lengths"])
                into["composition"].update(stats["composition"])
        return merged

    def extract_output(self, accumulator):
        return accumulator


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
    files are those a metalink lists (empty for a UniRef XML). The XML is streamed: only its
    first element is parsed, so a 30 GB `uniref50.xml.gz` is fine.
    """
    files, release = {}, None
    with FileSystems.open(path) as stream:
        events = ElementTree.iterparse(stream, events=("start", "end"))
        _, root = next(events)
        if _local_name(root.tag).startswith("UniRef"):
            release = root.get("version")
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
    return {"release": release, "source": path, "files": files}


def md5_of_local_file(path: str) -> str:
    """Hex md5 of a file, read in 8 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_inputs(patterns: list[str], metalink_files: Optional[dict] = None) -> list[dict]:
    """The input files (path, size, md5 for local files), in pattern order then path order.

    Fails when a pattern matches nothing or two patterns match the same file, and when a
    file listed in `metalink_files` (by base name) has another size or md5.
    """
    inputs, seen = [], set()
    for pattern in patterns:
        matched = sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path)
        if not matched:
            raise ValueError("--input=%s matches no file" % pattern)
        for file in matched:
            if file.path in seen:
                raise ValueError("%s is matched by more than one --input pattern" % file.path)
            seen.add(file.path)
            entry = {"path": file.path, "size_bytes": file.size_in_bytes}
            if "://" not in file.path:
                entry["md5"] = md5_of_local_file(file.path)
            expected = (metalink_files or {}).get(file.path.rsplit("/", 1)[-1])
            if expected:
                for field, value in (("size", entry["size_bytes"]), ("md5", entry.get("md5"))):
                    if field in expected and value is not None and expected[field] != value:
                        raise ValueError("%s: %s is %s but the release metadata says %s" % (
                            file.path, field, value, expected[field]))
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
) -> dict:
    """Assembles the manifest and checks that the counts are conserved (ConservationError)."""
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
    return {
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
