"""Probe data: secondary structure (DSSP) and GB1 fitness, read from files inside installed wheels.

Secondary structure. sidechainnet 1.0.1 ships
`sidechainnet/resources/full_protein_dssp_annotations.json`: one object per PDB chain (`"200L_1_A": {"Sequence": ..., "DSSP": ...}`), 159,026 chains, 82,813
distinct sequences, DSSP's 8 states with `L` for coil. Preparation:

1. Read and check every record (sequence and DSSP string of equal length, DSSP letters in
   `DSSP8_STATES`); a bad record is an error naming the file and the chain.
2. Keep one record per distinct sequence: the smallest chain id (the same sequence in several
   entries or chains can have slightly different DSSP strings; the choice must not depend on the
   file's order). Reject, counted by reason, sequences outside [min_length, max_length] or with a
   residue outside the 20 canonical ones (mostly `X`).
3. Draw a candidate pool of `pool_size` sequences, ordered by sha256(seed, sequence).
4. Cluster the pool with MMseqs2 (`easy-cluster`, connected components of the graph of
   alignments with identity >= `min_identity` covering >= `min_coverage` of both sequences) and
   give each whole cluster to one split by sha256(seed, representative): test (the first
   `test_fraction`), validation (the next `validation_fraction`) or train.
5. Cap train at its size, then search every test and validation protein against those train
   proteins (`easy-search`, high sensitivity); one with a hit of identity >= `min_identity`
   covering >= `min_coverage` of it is removed from its split (counted). So no held-out protein has a train protein within the
   threshold even where clustering's own search missed an edge.
6. Cap validation and test at their sizes (hash order), so a probe trains on CPU in minutes.

Labels: SS8 is DSSP's eight states with coil written `C` (H G I E B T S C); SS3 is the usual
reduction H G I -> H (helix), E B -> E (strand), T S C -> C (coil).

GB1 fitness. mavenn 1.1.4 ships `mavenn/examples/datasets/gb1_data.csv.gz` (Olson et al. 2014):
530,737 double mutants of the 55-residue GB1 domain with a `set` column (training, validation,
test) and the fitness `y` (log enrichment). Each set is subsampled (hash order) to its size. The
wild type (the consensus of all variants) is written as FASTA for decontamination.
"""
import csv
import dataclasses
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import tempfile
from collections import Counter
from typing import Iterable, Optional

from pipelines import decontaminate

DSSP_PACKAGE, DSSP_RESOURCE = "sidechainnet", "resources/full_protein_dssp_annotations.json"
GB1_PACKAGE, GB1_RESOURCE = "mavenn", "examples/datasets/gb1_data.csv.gz"
DSSP8_STATES = "HGIEBTSL"
SS8_CLASSES = "HGIEBTSC"
SS3_CLASSES = "HEC"
# DSSP letter -> SS8 label (coil `L` written `C`) and SS3 label.
SS8_OF_DSSP = {state: ("C" if state == "L" else state) for state in DSSP8_STATES}
SS3_OF_DSSP = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "L": "C"}
CANONICAL = frozenset("ACDEFGHIKLMNPQRSTVWY")
SPLITS = ("train", "validation", "test")
GB1_SETS = {"train": "training", "validation": "validation", "test": "test"}


@dataclasses.dataclass(frozen=True)
class SsParams:
    """What `prepare_secondary_structure` does; all of it goes into the manifest."""
    seed: int = 0
    min_length: int = 40
    max_length: int = 500
    pool_size: int = 5000
    min_identity: float = 0.3
    min_coverage: float = 0.5
    test_fraction: float = 0.25
    validation_fraction: float = 0.1
    sizes: tuple = (("train", 1200), ("validation", 200), ("test", 400))


@dataclasses.dataclass(frozen=True)
class Gb1Params:
    seed: int = 0
    sizes: tuple = (("train", 2000), ("validation", 500), ("test", 1000))


@dataclasses.dataclass(frozen=True)
class SsRecord:
    id: str
    sequence: str
    dssp: str

    def to_json_dict(self) -> dict:
        return {"id": self.id, "sequence": self.sequence, "ss8": ss8_labels(self.dssp),
                "ss3": ss3_labels(self.dssp)}


def package_file(package: str, relative: str) -> str:
    """The path of a data file inside an installed package, found without importing it
    (sidechainnet's `__init__` imports heavy dependencies that a `--no-deps` install lacks)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package %r is not installed; its wheel holds the probe data: "
            "pip install --no-deps -r requirements-nodeps.txt" % package)
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.isfile(path):
        raise FileNotFoundError("%s: not found in the installed %s %s" % (
            path, package, importlib.metadata.version(package)))
    return path


def ss8_labels(dssp: str) -> str:
    return "".join(SS8_OF_DSSP[state] for state in dssp)


def ss3_labels(dssp: str) -> str:
    return "".join(SS3_OF_DSSP[state] for state in dssp)


def _order_key(seed: int, text: str) -> bytes:
    return hashlib.sha256(b"%d\0%s" % (seed, text.encode())).digest()


def _fraction(seed: int, text: str) -> float:
    return int.from_bytes(_order_key(seed, text)[:8], "big") / 2**64


def read_dssp_records(path: str) -> list[SsRecord]:
    """Every record of a sidechainnet DSSP annotation file, checked (ValueError naming the file
    and chain otherwise)."""
    with open(path) as f:
        entries = json.load(f)
    records = []
    for chain_id, entry in entries.items():
        sequence, dssp = entry.get("Sequence"), entry.get("DSSP")
        if not isinstance(sequence, str) or not isinstance(dssp, str):
            raise ValueError("%s: record %s lacks a Sequence or DSSP string" % (path, chain_id))
        if len(sequence) != len(dssp):
            raise ValueError("%s: record %s has %d residues but %d DSSP states" % (
                path, chain_id, len(sequence), len(dssp)))
        bad = set(dssp) - set(DSSP8_STATES)
        if bad:
            raise ValueError("%s: record %s has DSSP states %s outside %s" % (
                path, chain_id, "".join(sorted(bad)), DSSP8_STATES))
        records.append(SsRecord(chain_id, sequence, dssp))
    return records


def unique_records(records: Iterable[SsRecord], params: SsParams) -> tuple[list[SsRecord], Counter]:
    """One record per distinct sequence (the smallest chain id), and the counts of what was left
    out: `duplicate`, `too_short`, `too_long`, `non_canonical`. Sorted by id."""
    counts = Counter()
    by_sequence = {}
    for record in records:
        kept = by_sequence.get(record.sequence)
        if kept is not None:
            counts["duplicate"] += 1
            if record.id < kept.id:
                by_sequence[record.sequence] = record
        else:
            by_sequence[record.sequence] = record
    unique = []
    for record in by_sequence.values():
        if len(record.sequence) < params.min_length:
            counts["too_short"] += 1
        elif len(record.sequence) > params.max_length:
            counts["too_long"] += 1
        elif not set(record.sequence) <= CANONICAL:
            counts["non_canonical"] += 1
        else:
            unique.append(record)
    return sorted(unique, key=lambda r: r.id), counts


def write_fasta(path: str, items: Iterable[tuple[str, str]]) -> None:
    with open(path, "w") as f:
        for name, sequence in items:
            f.write(">%s\n%s\n" % (name, sequence))


# Connected components (--cluster-mode 1): a cluster is closed under the alignment edges found,
# not only one representative's neighbours, so members of different clusters are not similar as
# far as the search saw. Coverage here is of both sequences (--cov-mode 0); a short protein inside
# a long one of another cluster is caught by the cross-split check (coverage of the held-out one).
def cluster(records: list[SsRecord], min_identity: float, min_coverage: float,
            work_dir: str) -> dict[str, str]:
    """id -> cluster representative id, from `mmseqs easy-cluster` (one thread: deterministic)."""
    decontaminate.mmseqs_version()
    fasta = os.path.join(work_dir, "pool.fasta")
    write_fasta(fasta, ((r.id, r.sequence) for r in records))
    prefix = os.path.join(work_dir, "clusters")
    _mmseqs("easy-cluster", fasta, prefix, os.path.join(work_dir, "tmp"),
            "--min-seq-id", str(min_identity), "-c", str(min_coverage), "--cov-mode", "0",
            "--cluster-mode", "1", "--seq-id-mode", "0", "--threads", "1", "-v", "1")
    members = {}
    with open(prefix + "_cluster.tsv") as f:
        for line in f:
            representative, member = line.rstrip("\n").split("\t")
            members[member] = representative
    missing = {r.id for r in records} - set(members)
    if missing:
        raise RuntimeError("mmseqs easy-cluster left out %d sequences, e.g. %s" % (
            len(missing), sorted(missing)[0]))
    return members


def cross_split_hits(queries: list[SsRecord], targets: list[SsRecord], min_identity: float,
                     min_coverage: float, work_dir: str) -> dict[str, tuple[str, float, float]]:
    """query id -> (target id, identity, query coverage) of its best hit among `targets` with
    identity >= min_identity over >= min_coverage of the query (`mmseqs easy-search -s 7.5`,
    every hit of any E-value up to 10 re-checked on the reported values)."""
    if not queries or not targets:
        return {}
    decontaminate.mmseqs_version()
    query_fasta, target_fasta = (os.path.join(work_dir, n) for n in ("q.fasta", "t.fasta"))
    write_fasta(query_fasta, ((r.id, r.sequence) for r in queries))
    write_fasta(target_fasta, ((r.id, r.sequence) for r in targets))
    hits_path = os.path.join(work_dir, "hits.tsv")
    _mmseqs("easy-search", query_fasta, target_fasta, hits_path, os.path.join(work_dir, "stmp"),
            "-s", "7.5", "-e", "10", "--max-seqs", "2000", "--seq-id-mode", "0",
            "--format-output", "query,target,fident,qcov,bits", "--threads", "1", "-v", "1")
    best = {}
    with open(hits_path) as f:
        for line in f:
            query, target, identity, coverage, bits = line.rstrip("\n").split("\t")
            identity, coverage, bits = float(identity), float(coverage), float(bits)
            if identity >= min_identity and coverage >= min_coverage:
                key = (bits, identity, coverage, target)
                if query not in best or key > best[query][0]:
                    best[query] = (key, (target, identity, coverage))
    return {query: hit for query, (_, hit) in sorted(best.items())}


def _mmseqs(*args: str) -> None:
    result = subprocess.run((decontaminate.MMSEQS,) + args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError("mmseqs %s failed (exit %d): %s" % (
            args[0], result.returncode, result.stderr[-2000:]))


def split_secondary_structure(records: list[SsRecord], params: SsParams,
                              work_dir: str) -> tuple[dict[str, list[SsRecord]], dict]:
    """Steps 3-6 of the module docstring on unique records: the splits and their counts."""
    pool = sorted(records, key=lambda r: _order_key(params.seed, r.sequence))[:params.pool_size]
    representative = cluster(pool, params.min_identity, params.min_coverage, work_dir)
    split_of_cluster = {}
    for rep in sorted(set(representative.values())):
        fraction = _fraction(params.seed, "cluster:" + rep)
        split_of_cluster[rep] = ("test" if fraction < params.test_fraction else
                                 "validation" if fraction < params.test_fraction
                                 + params.validation_fraction else "train")
    splits = {name: [r for r in pool if split_of_cluster[representative[r.id]] == name]
              for name in SPLITS}
    counts = {"pool": len(pool), "clusters": len(split_of_cluster),
              "clusters_per_split": dict(Counter(split_of_cluster.values())),
              "before_cross_split_check": {k: len(v) for k, v in splits.items()}}
    # Cap train first: the held-out proteins are checked against the train set actually used.
    sizes = dict(params.sizes)
    splits["train"] = splits["train"][:sizes["train"]]
    # One search for both held-out splits (each mmseqs call has a fixed start-up cost).
    hits = cross_split_hits(splits["validation"] + splits["test"], splits["train"],
                            params.min_identity, params.min_coverage, work_dir)
    removed = {}
    for name in ("validation", "test"):
        ids = {r.id for r in splits[name]}
        removed[name] = {query: {"train_id": t, "identity": i, "coverage": c}
                         for query, (t, i, c) in hits.items() if query in ids}
        splits[name] = [r for r in splits[name] if r.id not in hits][:sizes[name]]
    counts["removed_by_cross_split_check"] = {k: len(v) for k, v in removed.items()}
    counts["final"] = {k: len(v) for k, v in splits.items()}
    counts["clusters_final"] = {k: len({representative[r.id] for r in v})
                                for k, v in splits.items()}
    counts["residues"] = {k: sum(len(r.sequence) for r in v) for k, v in splits.items()}
    return splits, {"counts": counts, "removed": removed}


def read_gb1(path: str) -> dict[str, list[tuple[str, float]]]:
    """mavenn's GB1 table: set name -> [(sequence, y)] in file order."""
    sets = {name: [] for name in GB1_SETS.values()}
    with gzip.open(path, "rt") as f:
        for line_number, row in enumerate(csv.DictReader(f), start=2):
            if row.get("set") not in sets:
                raise ValueError("%s: line %d has set %r, not one of %s" % (
                    path, line_number, row.get("set"), sorted(sets)))
            try:
                sets[row["set"]].append((row["x"], float(row["y"])))
            except (KeyError, ValueError) as error:
                raise ValueError("%s: line %d: %s" % (path, line_number, error)) from error
    return sets


def consensus(sequences: list[str]) -> str:
    """The most common residue at each position (ties: the smallest letter)."""
    length = len(sequences[0])
    columns = [Counter() for _ in range(length)]
    for sequence in sequences:
        if len(sequence) != length:
            raise ValueError("GB1 variants of different lengths: %d and %d" % (
                length, len(sequence)))
        for column, residue in zip(columns, sequence):
            column[residue] += 1
    return "".join(min(c, key=lambda a: (-c[a], a)) for c in columns)


def subsample_gb1(sets: dict, params: Gb1Params) -> dict[str, list[tuple[str, float]]]:
    sizes = dict(params.sizes)
    return {split: sorted(sets[source], key=lambda item: _order_key(params.seed, item[0]))
            [:sizes[split]] for split, source in GB1_SETS.items()}


def file_digest(path: str) -> dict:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return {"path": path, "size": os.path.getsize(path), "sha256": sha.hexdigest()}


def _write_jsonl(path: str, items: Iterable[dict]) -> None:
    with open(path, "w") as f:
        for item in items:
            f.write(json.dumps(item, sort_keys=True) + "\n")


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def prepare(output_dir: str, ss_params: SsParams = SsParams(), gb1_params: Gb1Params = Gb1Params(),
            dssp_path: Optional[str] = None, gb1_path: Optional[str] = None) -> dict:
    """Writes the probe sets into `output_dir` and returns the manifest (also written, last, as
    `manifest.json`):

      ss_{train,validation,test}.jsonl   {"id", "sequence", "ss8", "ss3"} per protein
      ss_test.fasta                      the SS test proteins, for --benchmark_fasta
      gb1_{train,validation,test}.jsonl  {"sequence", "y"} per variant
      gb1_wildtype.fasta                 the GB1 wild type, for --benchmark_fasta
    """
    os.makedirs(output_dir, exist_ok=True)
    manifest_path = os.path.join(output_dir, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    dssp_path = dssp_path or package_file(DSSP_PACKAGE, DSSP_RESOURCE)
    gb1_path = gb1_path or package_file(GB1_PACKAGE, GB1_RESOURCE)

    records = read_dssp_records(dssp_path)
    unique, left_out = unique_records(records, ss_params)
    with tempfile.TemporaryDirectory(prefix="probe-split-") as work_dir:
        splits, split_info = split_secondary_structure(unique, ss_params, work_dir)
    for name, split in splits.items():
        _write_jsonl(os.path.join(output_dir, "ss_%s.jsonl" % name),
                     (r.to_json_dict() for r in split))
    write_fasta(os.path.join(output_dir, "ss_test.fasta"),
                ((r.id, r.sequence) for r in splits["test"]))

    gb1 = subsample_gb1(read_gb1(gb1_path), gb1_params)
    for name, split in gb1.items():
        _write_jsonl(os.path.join(output_dir, "gb1_%s.jsonl" % name),
                     ({"sequence": s, "y": y} for s, y in split))
    wildtype = consensus([s for split in gb1.values() for s, _ in split])
    write_fasta(os.path.join(output_dir, "gb1_wildtype.fasta"), [("GB1_wildtype", wildtype)])

    def versions(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    manifest = {
        "secondary_structure": {
            "source": dict(file_digest(dssp_path), package=DSSP_PACKAGE,
                           version=versions(DSSP_PACKAGE)),
            "params": dataclasses.asdict(ss_params),
            "records": len(records), "unique_kept": len(unique), "left_out": dict(left_out),
            "ss3_reduction": SS3_OF_DSSP, "ss8_classes": SS8_CLASSES,
            "mmseqs_version": decontaminate.mmseqs_version(), **split_info},
        "gb1": {
            "source": dict(file_digest(gb1_path), package=GB1_PACKAGE,
                           version=versions(GB1_PACKAGE)),
            "params": dataclasses.asdict(gb1_params), "wildtype": wildtype,
            "counts": {k: len(v) for k, v in gb1.items()}},
    }
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(manifest_path + ".tmp", manifest_path)
    return manifest
