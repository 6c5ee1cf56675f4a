"""Families for sequences that have none: the MSA of each query's MMseqs2 hits.

`SearchFamilies` reads query FASTA files, searches them in batches against a target database
(`mmseqs search`, then `mmseqs result2msa --msa-format-mode 5`: A3M with the query first, hits
aligned to it, lowercase = insert) and outputs one `alignments.Family` per query, named by the
query's id, with `query_only` set: only the query's row becomes a record of the job, the hits
shape its HMM. The target database (e.g. UniRef50 itself) is a FASTA file, turned into an MMseqs2
database once per worker, or an MMseqs2 database made beforehand (`mmseqs createdb`, recognised
by its `.dbtype` file), which a worker reads in place.
"""
import logging
import os
import shutil
import subprocess
import tempfile
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import alignments
from pipelines import decontaminate

DEFAULT_SENSITIVITY = 5.7
DEFAULT_MAX_HITS = 300
DEFAULT_BATCH_SIZE = 1000


def _run(*args: str) -> None:
    done = subprocess.run((decontaminate.MMSEQS,) + args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("mmseqs %s failed (exit %d): %s" % (
            args[0], done.returncode, (done.stderr or done.stdout)[-2000:]))


def read_queries(path: str):
    """(path, line, id, sequence) of a query FASTA file (plain or compressed)."""
    for line, name, sequence in alignments.fasta_rows(path):
        yield path, line, name, sequence


def read_db_entries(database: str) -> dict[int, bytes]:
    """{key: entry} of an MMseqs2 database (its `.index` of key, offset, length and the data
    file, entries ending in a NUL byte)."""
    with open(database, "rb") as data_file:
        data = data_file.read()
    entries = {}
    with open(database + ".index") as index:
        for line in index:
            key, offset, length = map(int, line.split("\t"))
            entries[key] = data[offset:offset + length].rstrip(b"\0")
    return entries


def parse_a3m(text: bytes) -> tuple[list[str], list[bytes]]:
    """(names, rows) of an A3M entry."""
    names, rows = [], []
    for block in text.split(b">")[1:]:
        header, _, body = block.partition(b"\n")
        names.append(header.split(None, 1)[0].decode("utf-8", "replace") if header.strip()
                     else "")
        rows.append(b"".join(body.split()))
    return names, rows


class MsaSearch:
    """A target database and the searches of query batches against it (a context manager)."""

    def __init__(self, target: str, sensitivity: float, max_hits: int):
        decontaminate.mmseqs_version()
        self._workdir = tempfile.mkdtemp(prefix="msa-search-")
        self._sensitivity = sensitivity
        self._max_hits = max_hits
        if os.path.exists(target + ".dbtype"):
            self._target = target
        else:
            local = os.path.join(self._workdir, "target.fasta")
            with FileSystems.open(target) as source, open(local, "wb") as out:
                shutil.copyfileobj(source, out)
            self._target = os.path.join(self._workdir, "target")
            _run("createdb", local, self._target, "-v", "1")

    def search(self, queries: list[tuple[str, bytes]]) -> list[tuple[list[str], list[bytes]]]:
        """The (names, A3M rows) MSA of each (id, sequence) query, in query order; a query
        without hits gets its own row alone."""
        batch = tempfile.mkdtemp(prefix="batch-", dir=self._workdir)
        try:
            fasta = os.path.join(batch, "queries.fasta")
            with open(fasta, "wb") as out:
                for i, (_, sequence) in enumerate(queries):
                    out.write(b">q%d\n%s\n" % (i, sequence))
            query_db, result_db, msa_db = (os.path.join(batch, n) for n in ("q", "res", "msa"))
            _run("createdb", fasta, query_db, "-v", "1")
            _run("search", query_db, self._target, result_db, os.path.join(batch, "tmp"),
                 "-s", str(self._sensitivity), "--max-seqs", str(self._max_hits),
                 "--threads", "1", "-v", "1")
            _run("result2msa", query_db, self._target, result_db, msa_db,
                 "--msa-format-mode", "5", "--threads", "1", "-v", "1")
            keys = {}
            with open(query_db + ".lookup") as lookup:
                for line in lookup:
                    key, name = line.split("\t")[:2]
                    keys[int(name[1:])] = int(key)
            entries = read_db_entries(msa_db)
            results = []
            for i, (name, sequence) in enumerate(queries):
                entry = entries.get(keys[i])
                if not entry:
                    results.append(([name], [sequence]))
                    continue
                names, rows = parse_a3m(entry)
                results.append(([name] + names[1:], rows))
            return results
        finally:
            shutil.rmtree(batch, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *unused):
        self.close()


class _SearchFn(beam.DoFn):
    """Batches of queries -> one Family per query (A3M, query_only)."""

    def __init__(self, target, sensitivity, max_hits):
        self._target = target
        self._sensitivity = sensitivity
        self._max_hits = max_hits

    def setup(self):
        self._search = MsaSearch(self._target, self._sensitivity, self._max_hits)

    def process(self, batch):
        started = time.monotonic()
        msas = self._search.search([(name, sequence) for _, _, name, sequence in batch])
        logging.info("searched %d queries in %.1f s", len(batch), time.monotonic() - started)
        for (path, line, name, _), (names, rows) in zip(batch, msas):
            yield alignments.Family(path, line, name, "", None, names, rows,
                                    [line] * len(rows), alignments.A3M, query_only=True)

    def teardown(self):
        self._search.close()


class SearchFamilies(beam.PTransform):
    """Query FASTA paths -> one `alignments.Family` per query (see the module docstring)."""

    def __init__(self, target: str, sensitivity: float = DEFAULT_SENSITIVITY,
                 max_hits: int = DEFAULT_MAX_HITS, batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        self._target = target
        self._sensitivity = sensitivity
        self._max_hits = max_hits
        self._batch_size = batch_size

    def expand(self, paths):
        return (paths
                | "ReadQueries" >> beam.FlatMap(read_queries)
                | "SpreadQueries" >> beam.Reshuffle()
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size,
                                                max_batch_size=self._batch_size)
                | "Search" >> beam.ParDo(_SearchFn(self._target, self._sensitivity,
                                                   self._max_hits)))
