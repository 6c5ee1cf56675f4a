"""Release pinning: the UniProt release a run reads, checked before anything is written.

`pin_inputs` runs on the launcher before the output directory is touched. It takes the release
from `--release`, from `--release_metadata` (a RELEASE.metalink or a UniRef XML, parsed by
`manifest.read_release_metadata`) and from the `version` stamp of `--membership_xml`, fails when
they disagree, and describes every input file (size, md5), failing on the first one that differs
from the metalink or that the metalink does not list (unless `--allow_unlisted_inputs`).
"""
from typing import NamedTuple, Optional

from pipelines import manifest

UNKNOWN = "unknown"
MEMBERSHIP_LEVELS = ("UniRef50", "UniRef90")


class PinnedInputs(NamedTuple):
    """What the manifest records about the inputs: release, FASTA inputs, XML, benchmarks."""

    release: dict
    inputs: list[dict]
    membership: Optional[dict]
    benchmarks: list[dict]


def _agree(release: Optional[str], other: str, what: str, current_source: str) -> str:
    if release not in (None, UNKNOWN) and release != other:
        raise manifest.ReleaseMismatchError(
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

    Raises manifest.ReleaseMismatchError naming the file or the two releases that disagree.
    """
    if release_metadata:
        release = manifest.read_release_metadata(release_metadata)
        if release_flag:
            _agree(release_flag, release["release"], "in " + release_metadata, "--release")
    else:
        release = {"release": release_flag or UNKNOWN, "source": "--release", "files": {}}
    metalink_files = release["files"]
    inputs = manifest.describe_inputs(input_patterns, metalink_files, allow_unlisted_inputs)
    membership = None
    if membership_xml:
        stamp = manifest.read_release_metadata(membership_xml)
        if stamp.get("level") not in MEMBERSHIP_LEVELS:
            raise ValueError("--membership_xml=%s: the root element is not one of %s" % (
                membership_xml, "/".join(MEMBERSHIP_LEVELS)))
        described = manifest.describe_inputs(
            [membership_xml], metalink_files, allow_unlisted_inputs, flag="--membership_xml")
        if len(described) != 1:
            raise ValueError("--membership_xml=%s must name one file" % membership_xml)
        _agree(release["release"], stamp["release"], "the version of " + membership_xml,
               release["source"])
        if release["release"] == UNKNOWN:
            release = dict(release, release=stamp["release"], source=membership_xml)
        membership = dict(described[0], level=stamp["level"], version=stamp["release"],
                          release_date=stamp["release_date"])
    benchmarks = manifest.describe_inputs(
        benchmark_fastas, None, flag="--benchmark_fasta") if benchmark_fastas else []
    return PinnedInputs(release, inputs, membership, benchmarks)
