"""The file shuffle's writers and reader (plain functions, no Beam)."""
import pytest

from pipelines import shuffle
from pipelines import writers


def _spill_files(directory):
    return sorted(p for p in directory.iterdir() if p.name.startswith(shuffle.SPILL_PREFIX))


def test_spill_buffer_round_trip_in_sorted_partitions(tmp_path):
    writer = shuffle.SpillBuffer(str(tmp_path), flush_bytes=10_000)
    items = {(0, 2): [("a", b"MKV", None, 3)], (0, 1): [("b", b"M" * 50, 7, 0), ("c", b"", None, 1)],
             (2, 0): [("d", b"\x00\xff", 1, 2)]}
    for partition, found in items.items():
        for item in found:
            writer.add(partition, [item], len(item[1]))
    assert not writer.full
    chunks = writer.flush()
    assert [partition for partition, _ in chunks] == sorted(items)
    assert len(_spill_files(tmp_path)) == 1
    for partition, chunk in chunks:
        assert chunk[0] == shuffle.SPILLED
        assert list(shuffle.items_of([chunk])) == items[partition]
    # Sections tile the file in partition order.
    sections = [shuffle.Section._make(chunk[1]) for _, chunk in chunks]
    assert [s.start for s in sections] == [0] + [s.start + s.size for s in sections[:-1]]
    assert writer.flush() == []


def test_spill_buffer_is_full_at_its_limit_and_each_flush_is_a_new_file(tmp_path):
    writer = shuffle.SpillBuffer(str(tmp_path), flush_bytes=1000)
    writer.add(0, [(b"M" * 500,)], 500)
    assert not writer.full
    writer.add(0, [(b"K" * 500,)], 500)
    assert writer.full
    first = writer.flush()
    assert not writer.full
    writer.add(0, [(b"V",)], 1)
    second = writer.flush()
    assert len(_spill_files(tmp_path)) == 2
    assert list(shuffle.items_of([first[0][1], second[0][1]])) == [
        (b"M" * 500,), (b"K" * 500,), (b"V",)]


def test_inline_writer_gives_its_items_back_and_starts_empty():
    writer = shuffle.InlineBuffer()
    assert not writer.full
    writer.add(3, [("x",)], 1)
    writer.add(1, [("y",)], 1)
    writer.add(3, [("z",)], 1)
    assert writer.full
    chunks = dict(writer.flush())
    assert chunks == {3: (shuffle.INLINE, [("x",), ("z",)]), 1: (shuffle.INLINE, [("y",)])}
    assert not writer.full and writer.flush() == []
    assert list(shuffle.items_of([chunks[1], chunks[3]])) == [("y",), ("x",), ("z",)]


def test_a_truncated_spill_file_is_an_error_naming_it(tmp_path):
    writer = shuffle.SpillBuffer(str(tmp_path))
    writer.add(0, [(b"MKV" * 100,)], 300)
    (_, chunk), = writer.flush()
    path = _spill_files(tmp_path)[0]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IOError, match=str(path)):
        list(shuffle.items_of([chunk]))


def test_delete_spill_files_deletes_only_spill_files(tmp_path):
    writer = shuffle.SpillBuffer(str(tmp_path))
    for _ in range(3):
        writer.add(0, [(1,)], 1)
        writer.flush()
    (tmp_path / "train.tfrecord-00000-of-00001").write_bytes(b"")
    assert shuffle.delete_spill_files(str(tmp_path)) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["train.tfrecord-00000-of-00001"]
    assert shuffle.delete_spill_files(str(tmp_path)) == 0


def test_spill_files_are_temporary_outputs_a_new_run_removes():
    # The start-up clean-up of a killed run matches the job's temporary prefix.
    assert shuffle.SPILL_PREFIX.startswith(writers.TEMP_PREFIX)
    assert writers.TEMP_PREFIX + "*" in writers.OUTPUT_PATTERNS
