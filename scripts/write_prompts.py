"""Writes Ankh3 prompts as a TFRecord of tf.Examples for `python -m t5x.infer` (gin/runs/infer.gin).

    python -m scripts.write_prompts --output=out/sample/prompts.tfrecord \
        --prefix=MKAYVL --masked=M_AY_LI_SRG_

`--prefix=RESIDUES` asks for a completion: the input is `[S2S]RESIDUES` and the model generates
the rest of the protein. `--masked=TEXT` asks for masked residues: each `_` in TEXT is a residue
to predict; the input is `[NLU]` and TEXT with the k-th `_` replaced by `<extra_id_k>`, as in
training (tasks/preprocessors.py), and the model generates `<extra_id_0> R0 <extra_id_1> R1 ...`.
Each record has one feature, `inputs` (the prompt text, which the model's vocabulary tokenizes;
t5x appends EOS).
"""
import argparse
import os
import re
from typing import List, Optional, Sequence

import tensorflow as tf

from tasks import vocabulary

MASK_CHAR = "_"


def _check_residues(text: str, allowed: str, flag: str) -> str:
    """Uppercases `text` and checks that it holds only residue letters and `allowed`."""
    text = text.strip().upper()
    if not re.fullmatch("[%s]+" % re.escape(vocabulary.RESIDUES + allowed), text):
        raise ValueError("%s=%r: expected residue letters (%s)%s" % (
            flag, text, vocabulary.RESIDUES, " and %r" % allowed if allowed else ""))
    return text


def completion_prompt(prefix: str) -> str:
    """`[S2S]` followed by the residues of `prefix`."""
    return vocabulary.S2S_PREFIX + _check_residues(prefix, "", "--prefix")


def masked_prompt(masked: str) -> str:
    """`[NLU]` followed by `masked` with its k-th `_` replaced by `<extra_id_k>`."""
    masked = _check_residues(masked, MASK_CHAR, "--masked")
    count = masked.count(MASK_CHAR)
    if count == 0:
        raise ValueError("--masked=%r: mark at least one residue to predict with %r"
                         % (masked, MASK_CHAR))
    if count > vocabulary.NUM_SENTINELS:
        raise ValueError("--masked=%r: %d masked residues, but the vocabulary has %d sentinels"
                         % (masked, count, vocabulary.NUM_SENTINELS))
    pieces = masked.split(MASK_CHAR)
    out = [pieces[0]]
    for k, piece in enumerate(pieces[1:]):
        out.append(vocabulary.sentinel_token(k) + piece)
    return vocabulary.NLU_PREFIX + "".join(out)


def write_prompts(path: str, prompts: Sequence[str]) -> None:
    """Writes one tf.Example with feature `inputs` per prompt, in order, atomically."""
    tmp_path = path + ".tmp"
    with tf.io.TFRecordWriter(tmp_path) as writer:
        for prompt in prompts:
            example = tf.train.Example(features=tf.train.Features(feature={
                "inputs": tf.train.Feature(bytes_list=tf.train.BytesList(value=[prompt.encode()]))
            }))
            writer.write(example.SerializeToString())
    os.replace(tmp_path, path)


def main(argv: Optional[List[str]] = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="TFRecord file to write.")
    parser.add_argument("--prefix", action="append", default=[],
                        help="Residues to complete (repeatable).")
    parser.add_argument("--masked", action="append", default=[],
                        help="Residues with '_' where a residue is to be predicted (repeatable).")
    args = parser.parse_args(argv)
    prompts = [completion_prompt(p) for p in args.prefix] + [masked_prompt(m) for m in args.masked]
    if not prompts:
        parser.error("give at least one --prefix or --masked")
    if os.path.dirname(args.output):
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
    write_prompts(args.output, prompts)
    for prompt in prompts:
        print(prompt)


if __name__ == "__main__":
    main()
