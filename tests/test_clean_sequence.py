"""The compiled common path of sequence validation (`clean_sequence`, pipelines/_fasta_scan.c)
against its specification, `validation.normalize`, `check_sequence` and `sequence_hash`, on
random record bodies, and `check_record` built on it."""
import hashlib

import pytest
from hypothesis import example, given, settings, strategies as st

from pipelines import validation
from pipelines._fasta_scan import clean_sequence

# Pieces that make bodies with residues of both cases (non-canonical ones included), every
# whitespace byte, `*` anywhere, digits and other ASCII, and non-ASCII bytes, valid UTF-8 or not.
PIECES = [b"M", b"k", b"V", b"x", b"X", b"B", b"z", b"U", b"o", b"ACDEFGHIKLMNPQRSTVWY",
          b"acdefghiklmnpqrstvwy", b" ", b"\t", b"\r\n", b"\n", b"\v", b"\f", b"*", b"*", b"1",
          b"J", b"-", b".", "é".encode(), b"\xff", b"\x00"]
bodies = st.lists(st.sampled_from(PIECES), max_size=30).map(b"".join)
policies = st.sampled_from(validation.NON_CANONICAL_POLICIES)


def _policy_code(policy):
    return validation.NON_CANONICAL_POLICIES.index(policy)


def _specified(body, rules):
    """What `clean_sequence` must give, from the Python functions that specify it."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    checked = validation.check_sequence(validation.normalize(body), rules)
    if isinstance(checked, tuple):
        return None
    return checked, validation.sequence_hash(checked)


@settings(max_examples=1500, deadline=None)
@given(body=bodies, policy=policies, min_length=st.integers(-2, 25),
       max_length=st.integers(-2, 60))
@example(body=b"mkv\r\nBZUO*\r\n", policy=validation.MAP_TO_X, min_length=1, max_length=40)
@example(body=b"MK*\n*", policy=validation.KEEP, min_length=1, max_length=40)  # `**` at the end
@example(body=b"*\n", policy=validation.KEEP, min_length=0, max_length=40)  # only a stop
@example(body=b"MKV", policy=validation.KEEP, min_length=3, max_length=3)  # both bounds exactly
@example(body=b"MK\xc3\xa9", policy=validation.KEEP, min_length=1, max_length=40)
def test_clean_sequence_gives_what_the_python_functions_specify(body, policy, min_length,
                                                                 max_length):
    rules = validation.Rules(policy, min_length, max_length)
    assert clean_sequence(body, _policy_code(policy), min_length, max_length) == _specified(
        body, rules)


def test_clean_sequence_returns_the_sequence_and_its_sha256():
    sequence, digest = clean_sequence(b"mkv\nbzuo*\n", _policy_code(validation.MAP_TO_X), 1, 10)
    assert (sequence, digest) == (b"MKVXXXX", hashlib.sha256(b"MKVXXXX").digest())


def test_clean_sequence_refuses_an_unknown_policy():
    with pytest.raises(ValueError, match="non_canonical"):
        clean_sequence(b"MKV", len(validation.NON_CANONICAL_POLICIES), 1, 10)


@settings(max_examples=300, deadline=None)
@given(body=bodies, policy=policies, min_length=st.integers(0, 10),
       max_length=st.integers(0, 40))
def test_check_record_gives_the_python_path_result(body, policy, min_length, max_length):
    """`check_record` with the compiled path equals the record built from the Python functions
    alone: the same `Protein`, or a `Rejected` with the reason they give."""
    rules = validation.Rules(policy, min_length, max_length)
    checked = validation.check_record(("a.fasta", 7, b"UniRef50_P1 n=2 TaxID=9606", body), rules)
    specified = _specified(body, rules)
    if specified is None:
        assert isinstance(checked, validation.Rejected)
        if body.isascii():
            reason = validation.check_sequence(validation.normalize(body), rules)
            assert (checked.reason, checked.detail, checked.excerpt) == reason
    else:
        assert checked == validation.Protein(
            "UniRef50_P1", "UniRef50_P1", specified[0], specified[1], 2, 9606, "a.fasta", 7)
