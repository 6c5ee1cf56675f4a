"""The UniRef job against gs:// for real: a local GCS emulator (gcp-storage-emulator) on 127.0.0.1.

Beam's GCS filesystem (google-cloud-storage) is pointed at the emulator by STORAGE_EMULATOR_HOST,
the variable google-cloud-storage documents for that. The input FASTA is read from gs://, the
shards, spill files and manifest are written there, and what the job wrote is read back from gs://
and compared, byte for byte, with the same run on local files.

Not covered: TensorFlow's own GCS filesystem (what `tf.data` and so the SeqIO tasks use for gs://)
has its endpoints built in (https://www.googleapis.com/storage/v1/, no emulator variable in TF
2.21), so the tasks' reading of gs:// cannot run here; they read the same bytes locally in
tests/test_tasks_mixture.py.
"""
import os
import socket

import pytest

from pipelines import manifest
from pipelines import tfrecords
from pipelines import uniref

SAMPLE = os.path.join("tests", "data", "uniprotkb_sample.fasta.gz")
BUCKET = "ankh3-emulated"
FLAGS = ["--release=sample", "--num_train_shards=2", "--num_validation_shards=1",
         "--validation_fraction=0.1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator():
    server_module = pytest.importorskip(
        "gcp_storage_emulator.server", reason="gcp-storage-emulator not installed (requirements.txt)")
    port = _free_port()
    server = server_module.create_server("127.0.0.1", port, in_memory=True,
                                         default_bucket=BUCKET)
    server.start()
    # No Google credentials exist here: Beam would retry its search for them for ~25 s before
    # connecting anonymously, as it then does (and as the emulator needs). Start there.
    from apache_beam.internal.gcp import auth  # pylint: disable=import-outside-toplevel
    credentials_state = (auth._Credentials._credentials_init, auth._Credentials._credentials)
    auth._Credentials._credentials_init, auth._Credentials._credentials = True, None
    saved = {name: os.environ.get(name) for name in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")}
    # NO_GCE_CHECK: google-auth does not wait for a GCE metadata server that is not there.
    os.environ.update(STORAGE_EMULATOR_HOST="http://127.0.0.1:%d" % port, NO_GCE_CHECK="True")
    try:
        yield "gs://" + BUCKET
    finally:
        server.stop()
        auth._Credentials._credentials_init, auth._Credentials._credentials = credentials_state
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _copy_to(path: str, destination: str) -> None:
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
    from apache_beam.io.filesystem import CompressionTypes  # pylint: disable=import-outside-toplevel
    # UNCOMPRESSED: by default `create` would gzip a name ending in .gz a second time.
    with open(path, "rb") as source, FileSystems.create(
            destination, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        out.write(source.read())


def _files(directory: str) -> dict:
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
    found = {}
    for metadata in FileSystems.match([directory.rstrip("/") + "/*"])[0].metadata_list:
        with FileSystems.open(metadata.path, compression_type="uncompressed") as f:
            found[metadata.path.rsplit("/", 1)[-1]] = f.read()
    return found


def test_job_reads_and_writes_gs_and_matches_a_local_run(emulator, tmp_path):
    remote_input = emulator + "/uniprot/uniprotkb_sample.fasta.gz"
    _copy_to(SAMPLE, remote_input)
    remote_out = emulator + "/ankh3/sample"
    value = uniref.run(["--input=" + remote_input, "--output_dir=" + remote_out] + FLAGS)
    local_out = str(tmp_path / "local")
    local = uniref.run(["--input=" + SAMPLE, "--output_dir=" + local_out] + FLAGS)
    assert value["counts"] == local["counts"] and value["counts"]["train"] > 200
    assert value["inputs"][0]["path"] == remote_input
    remote_files, local_files = _files(remote_out), _files(local_out)
    assert set(remote_files) == set(local_files)  # no spill or temporary file left on gs://
    for name, data in local_files.items():
        if name != manifest.MANIFEST_NAME:
            assert remote_files[name] == data, name
    assert ({o["name"]: o["sha256"] for o in value["outputs"]}
            == {o["name"]: o["sha256"] for o in local["outputs"]})
    # Read back from gs:// as a reader of the shards would (TFRecord framing, CRCs checked).
    train = [p for name in sorted(remote_files) if name.startswith("train.tfrecord-")
             for p in tfrecords.read_tfrecords(remote_out + "/" + name)]
    assert len(train) == value["counts"]["train"]
    # A second run into the same gs:// directory is refused (the manifest marks it complete).
    with pytest.raises(FileExistsError):
        uniref.run(["--input=" + remote_input, "--output_dir=" + remote_out] + FLAGS)
