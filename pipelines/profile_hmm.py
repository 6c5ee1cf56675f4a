"""Profile HMMs and per-residue profile targets (plain functions, no Beam).

A residue's target is the emission of the HMM state it is aligned to. Rows of Pfam's full
alignments and of A3M are in "state form": uppercase = a residue in a match state, lowercase =
a residue in an insert state, `-` = a delete state (no residue), `.` = a gap in an insert
column; `row_profile` walks such a row through an HMM's nodes. For a built HMM the match columns
decide (`family_profiles`): the k-th match column is node k, the columns after it insert k.

- a match residue at node k gets the match emission of node k;
- an insert residue after node k gets the insert emission of node k (`--insert_targets=emission`,
  the default) or no target (`none`: an all-zero row, weight 0 in training). HMMER3 gives all
  insert states the same emission distribution, so the default teaches the model that the
  residue is an insert but says nothing of its column.

Two ways to get the HMM (docs/profiles.md says which fits which input):
- `build_family_hmm`: HMMER3's builder (pyhmmer) on the whole family. Match columns: the
  `#=GC RF` line when present (HMMER's `--hand`; a column is a match column when RF has a
  non-gap character there), else HMMER's own rule (`--fast`: a column is a match column when
  the weighted fraction of non-gap residues there is >= symfrac). HMMER's weighting (PB),
  effective sequence number (entropy weighting) and Dirichlet priors by default, each a flag.
- `read_hmms`: published HMMs (Pfam-A.hmm), read one at a time; rows are already in state form.

Targets are stored quantized to uint8 (`quantize_profile`): each row as 20 integers summing to
255, decoded as q / 255; each probability is within 1/255 of the HMM's. An HMM has 2(M + 1)
distinct targets, so a family's table is quantized once and each row indexes it.
"""
import io
from typing import Iterator, NamedTuple, Optional, Union

import numpy as np

from pipelines import alignments
from pipelines import records

AMINO_ACIDS = b"ACDEFGHIKLMNPQRSTVWY"  # HMMER's order of the 20 canonical residues.
PROFILE_SIZE = len(AMINO_ACIDS)
QUANTIZATION_LEVELS = 255
INSERT_EMISSION = "emission"
INSERT_NONE = "none"
INSERT_TARGETS = (INSERT_EMISSION, INSERT_NONE)
ARCHITECTURE_REFERENCE = "reference"  # the RF line when present, else HMMER's rule
ARCHITECTURE_HMMER = "hmmer"  # HMMER's rule even when there is an RF line
ARCHITECTURES = (ARCHITECTURE_REFERENCE, ARCHITECTURE_HMMER)
WEIGHTINGS = ("pb", "gsc", "blosum", "none")
EFFECTIVE_NUMBERS = ("entropy", "exp", "clust", "none")
PRIOR_SCHEMES = ("alphabet", "laplace")
DEFAULT_MIN_SEQUENCES = 2
DEFAULT_SYMFRAC = 0.5
DEFAULT_FRAGTHRESH = 0.5
# pyhmmer's builder seeds its random number generator (E-value calibration); fixed, so that the
# same family gives the same HMM.
BUILDER_SEED = 42
# The targets are the HMM's emissions, which HMMER's E-value calibration (scores of simulated
# random sequences, fitted per filter: 200 sequences each for MSV, Viterbi and Forward, about 40 %
# of a build) does not change. The job calibrates on this many sequences per filter instead: the
# emissions are bit for bit those of a fully calibrated build (a test checks it), the E-value
# parameters, which nothing here reads, are rough. (Fewer than 2 fails HMMER's fit.)
CALIBRATION_SEQUENCES = 10

# Rejection reasons of the profiles job, beside the sequence reasons of pipelines/records.py.
EMPTY_ALIGNMENT = "empty_alignment"
RAGGED_ROW = "ragged_row"
INCONSISTENT_A3M = "inconsistent_a3m"
TOO_FEW_SEQUENCES = "too_few_sequences"
NO_HMM = "no_hmm"
HMM_LENGTH_MISMATCH = "hmm_length_mismatch"
FAMILY_REASONS = (EMPTY_ALIGNMENT, TOO_FEW_SEQUENCES, NO_HMM)
ROW_REASONS = (RAGGED_ROW, INCONSISTENT_A3M, TOO_FEW_SEQUENCES, NO_HMM, HMM_LENGTH_MISMATCH)

_LOWER = bytes(range(97, 123))
_UPPER = bytes(range(65, 91))
_TO_UPPER = bytes.maketrans(_LOWER, _UPPER)
_RESIDUE_INDEX = np.full(256, -1, dtype=np.int64)
for _i, _residue in enumerate(AMINO_ACIDS):
    _RESIDUE_INDEX[_residue] = _i


class BuildOptions(NamedTuple):
    """How `build_family_hmm` builds an HMM (the job's flags)."""

    architecture: str = ARCHITECTURE_REFERENCE
    weighting: str = "pb"
    effective_number: str = "entropy"
    prior_scheme: str = "alphabet"
    symfrac: float = DEFAULT_SYMFRAC
    fragthresh: float = DEFAULT_FRAGTHRESH


class StateTargets(NamedTuple):
    """An HMM's emissions, as targets: `match[k]`, `insert[k]` for nodes k = 0..M (match[0] is
    unused; insert[0] is the insert state before the first match)."""

    key: str
    length: int
    match: np.ndarray
    insert: np.ndarray
    num_sequences: int
    effective_sequences: float


class RowProfile(NamedTuple):
    """One row's ungapped sequence and its states: `states[i]` is the row of `table` (see
    `target_table`) that is residue i's target, so the L x 20 targets are `table[states]`."""

    sequence: bytes
    states: np.ndarray
    table: np.ndarray

    @property
    def profile(self) -> np.ndarray:
        """The L x 20 float32 targets."""
        return self.table[self.states]


def targets_of(hmm, key: str) -> StateTargets:
    """The emissions of a pyhmmer HMM."""
    return StateTargets(key, hmm.M, np.asarray(hmm.match_emissions, dtype=np.float32),
                        np.asarray(hmm.insert_emissions, dtype=np.float32),
                        int(hmm.nseq or 0), float(hmm.nseq_effective or 0.0))


def read_hmms(path: str) -> Iterator[StateTargets]:
    """The HMMs of an HMMER3 file (Pfam-A.hmm, plain or compressed, local or gs://), one at a
    time, keyed by accession (else name). Each record (up to its `//` line) is handed to
    pyhmmer's parser on its own: a decompressing remote reader is not a file pyhmmer opens."""
    from pyhmmer import plan7  # pylint: disable=import-outside-toplevel

    def parse(lines: list[bytes]) -> StateTargets:
        with plan7.HMMFile(io.BytesIO(b"".join(lines))) as hmms:
            hmm = hmms.read()
        return targets_of(hmm, hmm.accession or hmm.name)

    record = []
    for _, line in alignments.iter_lines(path):
        record.append(line + b"\n")
        if line.startswith(b"//"):
            yield parse(record)
            record = []
    if any(line.strip() for line in record):
        raise ValueError("%s: the last HMM has no '//' line (a truncated file?)" % path)


def target_table(targets: StateTargets, insert_targets: str = INSERT_EMISSION) -> np.ndarray:
    """The targets of an HMM's states as one float32 table: rows 0..M the match states (row 0
    unused), rows M+1..2M+1 the insert states 0..M (all zero with `insert_targets=none`)."""
    insert = targets.insert if insert_targets == INSERT_EMISSION else np.zeros_like(
        targets.insert)
    return np.concatenate([targets.match, insert]).astype(np.float32)


def row_profile(row: bytes, targets: StateTargets, insert_targets: str = INSERT_EMISSION,
                table: Optional[np.ndarray] = None) -> RowProfile:
    """A row in state form -> its residues and their states (rows of `target_table`).

    Raises ValueError when the row's match and delete states do not add up to the HMM's
    length (a row aligned to another HMM, or a broken row).
    """
    codes = np.frombuffer(row, np.uint8)
    is_match = (codes >= 65) & (codes <= 90)
    is_insert = (codes >= 97) & (codes <= 122)
    advances = is_match | (codes == 45)  # a match or a delete moves to the next node
    nodes = np.cumsum(advances)
    if nodes[-1:].sum() != targets.length:
        raise ValueError("row has %d match/delete states, the HMM %s has %d nodes" % (
            int(nodes[-1:].sum()), targets.key, targets.length))
    residue = is_match | is_insert
    states = nodes[residue] + np.where(is_match[residue], 0, targets.length + 1)
    if table is None:
        table = target_table(targets, insert_targets)
    sequence = codes[residue].tobytes().translate(_TO_UPPER)
    return RowProfile(sequence, states, table)


def quantize_profile(profile: np.ndarray) -> np.ndarray:
    """L x 20 probabilities -> L x 20 uint8 that sum to 255 in every non-zero row.

    Largest remainder rounding: each q is floor or ceil of 255 p, the ceilings going to the
    largest remainders, so each decoded probability q / 255 is within 1/255 of p and every row
    still sums to exactly 1. All-zero rows (no target) stay zero. The job quantizes an HMM's
    state table once and indexes it per row (`RowProfile.quantized`).
    """
    scaled = np.clip(profile, 0.0, None).astype(np.float64)
    total = scaled.sum(axis=1, keepdims=True)
    scaled = np.divide(scaled, total, out=np.zeros_like(scaled), where=total > 0)
    scaled *= QUANTIZATION_LEVELS
    q = np.floor(scaled)
    missing = np.where(total[:, 0] > 0, QUANTIZATION_LEVELS - q.sum(axis=1), 0).astype(np.int64)
    order = np.argsort(-(scaled - q), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(PROFILE_SIZE)[None, :], axis=1)
    q += ranks < missing[:, None]
    return q.astype(np.uint8)


def profile_bytes(row: RowProfile, quantized_table: np.ndarray) -> bytes:
    """A row's targets in the output encoding: L x 20 uint8, row-major."""
    return quantized_table[row.states].tobytes()


def dequantize_profile(data: bytes) -> np.ndarray:
    """L*20 bytes -> L x 20 float32 probabilities, q / 255."""
    return np.frombuffer(data, np.uint8).reshape(-1, PROFILE_SIZE).astype(np.float32) / (
        QUANTIZATION_LEVELS)


def reference_match_columns(reference: bytes) -> np.ndarray:
    """HMMER's `--hand` rule: a column is a match column when RF has a non-gap character."""
    codes = np.frombuffer(reference, np.uint8)
    return ~np.isin(codes, np.frombuffer(b"-._~ ", np.uint8))


def build_family_hmm(rows: list[bytes], reference: Optional[bytes], name: str,
                     options: BuildOptions):
    """(pyhmmer HMM, match columns as a bool array) of equal-length aligned rows."""
    from pyhmmer import easel, plan7  # pylint: disable=import-outside-toplevel

    alphabet = easel.Alphabet.amino()
    use_reference = reference is not None and options.architecture == ARCHITECTURE_REFERENCE
    msa = easel.TextMSA(name=name.encode(), sequences=[
        easel.TextSequence(name=b"%d" % i, sequence=row.decode("ascii"))
        for i, row in enumerate(rows)])
    if use_reference:
        msa.reference = reference.decode("ascii")
    builder = plan7.Builder(
        alphabet, architecture="hand" if use_reference else "fast",
        weighting=options.weighting, effective_number=options.effective_number,
        prior_scheme=options.prior_scheme, symfrac=options.symfrac,
        fragthresh=options.fragthresh, seed=BUILDER_SEED, EmN=CALIBRATION_SEQUENCES,
        EvN=CALIBRATION_SEQUENCES, EfN=CALIBRATION_SEQUENCES)
    digital = msa.digitize(alphabet)
    hmm, _, _ = builder.build_msa(digital, plan7.Background(alphabet))
    if use_reference:
        return hmm, reference_match_columns(reference)
    # HMMER's builder marks the match columns it chose in the MSA's RF annotation ('x' match,
    # '.' insert; what `hmmbuild -O` writes), so the job never re-implements its rule.
    if digital.reference is None:
        raise RuntimeError("pyhmmer's builder left no match-column annotation on %s" % name)
    return hmm, reference_match_columns(digital.reference.encode("ascii"))


class RowRejection(NamedTuple):
    """A rejected row: its index in the family, reason, detail, excerpt."""

    index: int
    reason: str
    detail: str
    excerpt: str


def check_row_sequence(row: bytes, rules: records.Rules) -> Union[bytes, tuple]:
    """The row's normalized ungapped sequence, or (reason, detail, excerpt) of its rejection
    by the UniRef job's validation (unknown characters, length bounds, non-canonical policy)."""
    # Not records.normalize: a row holds no whitespace, and a '*' in it is no stop codon.
    return records.check_sequence(row.translate(_TO_UPPER, alignments.GAPS), rules)


class FamilyResult(NamedTuple):
    """What `family_profiles` makes of a family: profiles of the kept rows (by row index; they
    share one state table), rejected rows, and the family's rejection (reason, detail) or
    None."""

    profiles: list[tuple[int, RowProfile]]
    rejected: list[RowRejection]
    family_rejection: Optional[tuple[str, str]]
    targets: Optional[StateTargets]


def family_profiles(family: alignments.Family, rules: records.Rules, options: BuildOptions,
                    min_sequences: int = DEFAULT_MIN_SEQUENCES,
                    insert_targets: str = INSERT_EMISSION) -> FamilyResult:
    """Builds a family's HMM and gives every valid row its profile (see the module docstring).

    Rows are rejected for: another length than the family's (ragged_row), other match columns
    than the A3M's first row (inconsistent_a3m), an invalid sequence (validation's reasons),
    or a family left with fewer than `min_sequences` rows (too_few_sequences).
    """
    rows, rejected = list(family.rows), []
    if not rows:
        return FamilyResult([], [], (EMPTY_ALIGNMENT, "the alignment has no rows"), None)
    kept = list(range(len(rows)))
    reference = family.reference
    if family.format == alignments.A3M:
        match_counts = [len(row.translate(None, _LOWER)) for row in rows]
        query = match_counts[0]
        for i in kept:
            if match_counts[i] != query:
                rejected.append(RowRejection(i, INCONSISTENT_A3M, "%d match columns (uppercase "
                                             "or '-'), the first row has %d" % (
                                                 match_counts[i], query),
                                             records.excerpt_head(rows[i])))
        kept = [i for i in kept if match_counts[i] == query]
        expanded, reference = alignments.a3m_to_aligned([rows[i] for i in kept])
        for i, row in zip(kept, expanded):
            rows[i] = row
    else:
        width = len(reference) if reference is not None else len(rows[0])
        for i in kept:
            if len(rows[i]) != width:
                rejected.append(RowRejection(i, RAGGED_ROW, "row has %d columns, the alignment %d"
                                             % (len(rows[i]), width),
                                             records.excerpt_head(rows[i])))
        kept = [i for i in kept if len(rows[i]) == width]
    sequences = {}
    for i in kept:
        checked = check_row_sequence(rows[i], rules)
        if isinstance(checked, tuple):
            rejected.append(RowRejection(i, *checked))
        else:
            sequences[i] = checked
    kept = [i for i in kept if i in sequences]
    if len(kept) < min_sequences:
        detail = "%d valid rows, fewer than --min_family_sequences=%d" % (len(kept), min_sequences)
        rejected += [RowRejection(i, TOO_FEW_SEQUENCES, detail,
                                  records.excerpt_head(sequences[i])) for i in kept]
        return FamilyResult([], rejected, (TOO_FEW_SEQUENCES, detail), None)
    hmm, columns = build_family_hmm([rows[i] for i in kept], reference, family.key, options)
    targets = targets_of(hmm, family.key)
    table = target_table(targets, insert_targets)
    # All rows share the columns, so the state of a residue depends on its column alone: a
    # match column k-th from the left is match state k, an insert column after it insert k.
    nodes = np.cumsum(columns)
    column_states = np.where(columns, nodes, targets.length + 1 + nodes)
    width = len(columns)
    matrix = np.frombuffer(b"".join(rows[i] for i in kept), np.uint8).reshape(len(kept), width)
    letters = ~np.isin(matrix, np.frombuffer(alignments.GAPS, np.uint8))
    profiles = [(i, RowProfile(sequences[i], column_states[letters[j]], table))
                for j, i in enumerate(kept)]
    return FamilyResult(profiles, rejected, None, targets)
