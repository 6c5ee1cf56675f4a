"""Release pinning: the metalink is checked (size, md5, listing) before any output is touched."""
import hashlib
import os
import shutil

import pytest

from pipelines import fasta
from pipelines import release
from pipelines import uniref

RELEASE_DIR = os.path.join("tests", "data", "uniref_release")
METALINK = os.path.join(RELEASE_DIR, "RELEASE.metalink")
XML = os.path.join(RELEASE_DIR, "uniref50.xml.gz")
FASTA = os.path.join(RELEASE_DIR, "uniref90.fasta.gz")


def test_metalink_fixture_parses_with_the_real_sizes_and_md5s():
    value = release.read_release_metadata(METALINK)
    assert value["release"] == "2024_06"
    assert set(value["files"]) == {"uniref50.xml.gz", "uniref90.fasta.gz"}
    for name, expected in value["files"].items():
        data = open(os.path.join(RELEASE_DIR, name), "rb").read()
        assert expected == {"size": len(data), "md5": hashlib.md5(data).hexdigest()}
    stamp = release.read_release_metadata(XML)
    assert (stamp["release"], stamp["level"], stamp["release_date"]) == (
        "2024_06", "UniRef50", "2024-11-27")


def test_pin_inputs_verifies_inputs_and_xml_and_takes_the_release():
    pinned = release.pin_inputs(input_patterns=[FASTA], release_metadata=METALINK,
                                membership_xml=XML, release_flag="2024_06")
    assert pinned.release["release"] == "2024_06"
    assert pinned.inputs[0]["md5"] == hashlib.md5(open(FASTA, "rb").read()).hexdigest()
    assert (pinned.membership["version"], pinned.membership["level"]) == ("2024_06", "UniRef50")
    # Without --release or a metalink, the XML's version is the release.
    assert release.pin_inputs(input_patterns=[FASTA], membership_xml=XML).release == {
        "release": "2024_06", "source": XML, "files": {}}


def _copy_release(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    for name in os.listdir(RELEASE_DIR):
        shutil.copy(os.path.join(RELEASE_DIR, name), tmp_path / name)
    return tmp_path


def test_mismatches_name_the_file(tmp_path):
    directory = _copy_release(tmp_path)
    fasta, metalink = directory / "uniref90.fasta.gz", str(directory / "RELEASE.metalink")
    data = fasta.read_bytes()
    fasta.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other md5
    with pytest.raises(release.ReleaseMismatchError,
                       match=r"uniref90\.fasta\.gz: md5 is [0-9a-f]{32} but the release metadata"):
        release.pin_inputs(input_patterns=[str(fasta)], release_metadata=metalink)
    fasta.write_bytes(data + b"\n")
    with pytest.raises(release.ReleaseMismatchError,
                       match=r"uniref90\.fasta\.gz: size is %d but the release metadata says %d"
                       % (len(data) + 1, len(data))):
        release.pin_inputs(input_patterns=[str(fasta)], release_metadata=metalink)
    fasta.write_bytes(data)
    unlisted = directory / "extra.fasta"
    unlisted.write_bytes(b">x\nMKV\n")
    with pytest.raises(release.ReleaseMismatchError,
                       match=r"extra\.fasta \(--input\) is not listed .*--allow_unlisted_inputs"):
        release.pin_inputs(input_patterns=[str(fasta), str(unlisted)], release_metadata=metalink)
    pinned = release.pin_inputs(input_patterns=[str(fasta), str(unlisted)],
                                release_metadata=metalink, allow_unlisted_inputs=True)
    assert [os.path.basename(i["path"]) for i in pinned.inputs] == [
        "uniref90.fasta.gz", "extra.fasta"]


def test_releases_that_disagree_stop_the_job():
    with pytest.raises(release.ReleaseMismatchError,
                       match=r"release 2024_05 \(from --release\) differs from 2024_06"):
        release.pin_inputs(input_patterns=[FASTA], release_flag="2024_05",
                           release_metadata=METALINK)
    with pytest.raises(release.ReleaseMismatchError,
                       match=r"differs from 2024_06 \(the version of .*uniref50\.xml\.gz\)"):
        release.pin_inputs(input_patterns=[FASTA], release_flag="2024_05", membership_xml=XML)


def test_a_mismatch_stops_the_job_before_an_old_output_is_touched(tmp_path):
    directory = _copy_release(tmp_path / "release")
    fasta = directory / "uniref90.fasta.gz"
    fasta.write_bytes(fasta.read_bytes() + b"\n")
    out = tmp_path / "out"
    out.mkdir()
    old = {"manifest.json": b"{}", "train.tfrecord-00000-of-00001": b"old shard",
           ".tmp-train.tfrecord-00000-of-00001-x": b"leftover"}
    for name, data in old.items():
        (out / name).write_bytes(data)
    with pytest.raises(release.ReleaseMismatchError, match=r"uniref90\.fasta\.gz: size"):
        uniref.run(["--input=" + str(fasta), "--output_dir=" + str(out), "--overwrite",
                    "--release_metadata=" + str(directory / "RELEASE.metalink")])
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == old
