"""Release pinning: the UniProt release a run reads, checked before anything is written.

`pin_inputs` runs on the launcher before the output directory is touched. It takes the release
from `--release`, from `--release_metadata` (a RELEASE.metalink or a UniRef XML, parsed by
`read_release_metadata`) and from the `version` stamp of `--membership_xml`, fails when
they disagree, and describes every input file (size, md5), failing on the first one that differs
from the metalink or that the metalink does not list (unless `--allow_unlisted_inputs`).
"""
import hashlib
import xml.etree.ElementTree as ElementTree
from typing import NamedTuple, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import uniref_xml

UNKNOWN = "unknown"
MEMBERSHIP_LEVELS = ("UniRef50", "UniRef90")


class ReleaseMismatchError(ValueError):
    """An input file does not match the release metadata (size, md5, or not listed)."""


class PinnedInputs(NamedTuple):
    """What the manifest records about the inputs: release, FASTA inputs, XML, benchmarks."""

    release: dict
    inputs: list[dict]
    membership: Optional[dict]
    benchmarks: list[dict]


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
        if uniref_xml.local_name(root.tag).startswith("UniRef"):
            release = root.get("version")
            extra = {"level": uniref_xml.local_name(root.tag), "release_date": root.get("releaseDate")}
        elif uniref_xml.local_name(root.tag) == "metalink":
            for event, element in events:
                if event != "end":
                    continue
                name = uniref_xml.local_name(element.tag)
                if name == "version" and release is None:
                    release = (element.text or "").strip()
                elif name == "file":
                    entry = {}
                    for child in element.iter():
                        if uniref_xml.local_name(child.tag) == "size":
                            entry["size"] = int(child.text)
                        elif uniref_xml.local_name(child.tag) == "hash" and child.get("type") == "md5":
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
            if file.size_in_bytes == 0:
                raise ValueError("%s (%s) is empty: it holds no record" % (file.path, flag))
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


def _agree(release: Optional[str], other: str, what: str, current_source: str) -> str:
    if release not in (None, UNKNOWN) and release != other:
        raise ReleaseMismatchError(
            "release %s (from %s) differs from %s (%s)" % (release, current_source, other, what))
    return other


def pin_inputs(
    *,
    input_patterns: list[str],
    release_flag: Optional[str] = None,
    release_metadata: Optional[str] = None,
    membership_xml: Optional[str] = None,
    benchmark_fastas: Optional[list[str]] = None,
    allow_unlisted_inputs: bool = False,
) -> PinnedInputs:
    """Resolves the release and checks and describes every input (see the module docstring).

    Raises ReleaseMismatchError naming the file or the two releases that disagree.
    """
    if release_metadata:
        release = read_release_metadata(release_metadata)
        if release_flag:
            _agree(release_flag, release["release"], "in " + release_metadata, "--release")
    else:
        release = {"release": release_flag or UNKNOWN, "source": "--release", "files": {}}
    metalink_files = release["files"]
    inputs = describe_inputs(input_patterns, metalink_files, allow_unlisted_inputs)
    membership = None
    if membership_xml:
        stamp = read_release_metadata(membership_xml)
        if stamp.get("level") not in MEMBERSHIP_LEVELS:
            raise ValueError("--membership_xml=%s: the root element is not one of %s" % (
                membership_xml, "/".join(MEMBERSHIP_LEVELS)))
        described = describe_inputs(
            [membership_xml], metalink_files, allow_unlisted_inputs, flag="--membership_xml")
        if len(described) != 1:
            raise ValueError("--membership_xml=%s must name one file" % membership_xml)
        _agree(release["release"], stamp["release"], "the version of " + membership_xml,
               release["source"])
        if release["release"] == UNKNOWN:
            release = dict(release, release=stamp["release"], source=membership_xml)
        membership = dict(described[0], level=stamp["level"], version=stamp["release"],
                          release_date=stamp["release_date"])
    benchmarks = describe_inputs(
        benchmark_fastas, None, flag="--benchmark_fasta") if benchmark_fastas else []
    return PinnedInputs(release, inputs, membership, benchmarks)
