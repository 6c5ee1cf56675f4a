"""The compiled FASTA record scanner (`pipelines/_fasta_scan.c`) and the reader built on it
(`fasta_source.read_batches`) against a line-by-line Python reference, on random FASTA-like
bytes."""
import os
import re
import tempfile
from unittest import mock

import pytest
from apache_beam.io import range_trackers
from hypothesis import example, given, settings, strategies as st

from pipelines import fasta_source
from pipelines._fasta_scan import scan_records

PATH = "gs://bucket/part.fasta"
# Pieces that make headers anywhere, `>` inside lines, empty bodies and headers, blank lines,
# LF and CRLF line ends and stray `\r`s.
PIECES = [b">", b">", b"\n", b"\n", b"\r\n", b"\r", b"MKV", b"A", b"UniRef50_P1 n=2", b" ", b"x>y"]
fasta_like = st.lists(st.sampled_from(PIECES), max_size=80).map(b"".join)


def _lines(data):
    """(offset, line) of every line of `data`, line ends included; the last may have none."""
    return [(match.start(), match.group()) for match in re.finditer(rb"[^\n]*\n|[^\n]+$", data)]


def _reference_records(data, begin, at_eof):
    """(offset, header, body) of the records whose header line starts at or after `begin`,
    read line by line; the last record is left out unless `at_eof`."""
    records = []
    for offset, line in _lines(data):
        if line.startswith(b">") and offset >= begin:
            records.append([offset, line[1:].rstrip(b"\n").rstrip(b"\r"), b""])
        elif records:
            records[-1][2] += line
    if records and not at_eof:
        records.pop()
    return [tuple(record) for record in records]


def _limited(records, max_records, max_bytes):
    """The first records, up to `max_records` and until their bodies reach `max_bytes`."""
    taken, size = [], 0
    for record in records:
        if len(taken) == max_records or size >= max_bytes:
            break
        taken.append(record)
        size += len(record[2])
    return taken


@settings(max_examples=400, deadline=None)
@given(data=fasta_like, begin_fraction=st.floats(0, 1), base=st.integers(-1, 2**40),
       at_eof=st.booleans(), max_records=st.integers(1, 5), max_bytes=st.integers(1, 16))
@example(data=b">A\r\r\nMK\r\n>\n>B", begin_fraction=0, base=-1, at_eof=True, max_records=5,
         max_bytes=16)
@example(data=b">A\nMK\n>B\nW\n>C\n", begin_fraction=0, base=0, at_eof=True, max_records=5,
         max_bytes=3)  # the bodies reach `max_bytes` exactly
def test_scan_records_gives_the_reference_records(data, begin_fraction, base, at_eof,
                                                   max_records, max_bytes):
    begin = int(begin_fraction * len(data))
    records, stop = scan_records(data, begin, base, PATH, at_eof, max_records, max_bytes)

    expected = _limited(_reference_records(data, begin, at_eof), max_records, max_bytes)
    assert records == [(PATH, base + offset, header, body) for offset, header, body in expected]
    # `stop` is where the next record starts: after the last returned, at or after `begin`.
    following = [offset for offset, _ in _lines(data)
                 if data[offset:offset + 1] == b">" and offset >= begin
                 and offset > (records[-1][1] - base if records else -1)]
    assert stop == (following[0] if following else len(data))


@settings(max_examples=200, deadline=None)
@given(data=fasta_like, cuts=st.lists(st.floats(0, 1), max_size=6),
       max_records=st.integers(1, 4), max_bytes=st.integers(1, 30))
def test_resuming_at_stop_over_growing_chunks_gives_every_record_once(data, cuts, max_records,
                                                                      max_bytes):
    # The reader's use: the buffer grows a chunk at a time and each scan resumes at `stop`.
    ends = sorted(int(cut * len(data)) for cut in cuts) + [len(data)]
    records, position = [], 0
    for index, end in enumerate(ends):
        at_eof = index == len(ends) - 1
        while True:
            found, position = scan_records(data[:end], position, 0, PATH, at_eof, max_records,
                                           max_bytes)
            records += found
            if not found:
                break
    assert records == [(PATH,) + record for record in _reference_records(data, 0, True)]
    assert position == len(data)


def test_scan_records_checks_its_arguments():
    with pytest.raises(ValueError, match="'begin' is 4, outside \\[0, 3\\]"):
        scan_records(b">A\n", 4, 0, PATH, True, 1, 1)
    with pytest.raises(TypeError):
        scan_records(">A\n", 0, 0, PATH, True, 1, 1)
    assert scan_records(b">A\n", 3, 0, PATH, True, 1, 1) == ([], 3)


def _reference_read(data, start, stop):
    """What `read_batches` yields, flattened: orphan lines (split at 0 only), then the records
    whose header starts in [start, stop) of a file whose offset 0 follows a line end."""
    records = _reference_records(data, 0, True)
    first_header = records[0][0] if records else len(data)
    orphan = []
    if start == 0 and data[:first_header].strip():
        orphan = [(PATH, 0, None, data[:first_header])]
    return orphan + [(PATH,) + record for record in records if start <= record[0] < stop]


@settings(max_examples=150, deadline=None)
@given(data=fasta_like, chunk_bytes=st.integers(1, 16), split=st.tuples(st.floats(0, 1),
                                                                        st.floats(0, 1)),
       batch_records=st.integers(1, 4), batch_bytes=st.integers(1, 30))
def test_read_batches_over_small_chunks_and_splits_gives_the_reference_records(
        data, chunk_bytes, split, batch_records, batch_bytes):
    # Chunks of a few bytes make records cross chunk ends (the buffer's fill, compaction and
    # rescan), which 1 MiB chunks never do in small test files.
    start, stop = sorted(int(fraction * len(data)) for fraction in split)
    stop = stop + 1 if stop < len(data) else range_trackers.OffsetRangeTracker.OFFSET_INFINITY
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "random.fasta")
        with open(path, "wb") as file:
            file.write(data)
        with mock.patch.object(fasta_source, "_CHUNK_BYTES", chunk_bytes):
            batches = list(fasta_source.read_batches(
                path, range_trackers.OffsetRangeTracker(start, stop), batch_records, batch_bytes))

    read = [(PATH,) + record[1:] for batch in batches for record in batch]
    assert read == _reference_read(data, start, stop)
    for batch in batches:
        assert batch and len(batch) <= batch_records
        assert sum(len(record[3]) for record in batch[:-1]) < batch_bytes
    # Every batch but the last was closed by a limit (the orphan lines are a batch of their own).
    for batch in batches[:-1]:
        full = len(batch) == batch_records or sum(len(r[3]) for r in batch) >= batch_bytes
        assert full or batch[0][2] is None
