"""Evaluation metrics of the Ankh3 and profile tasks, as seqio metric functions.

`masked_residue_accuracy` and `continuation_residue_accuracy` are `(targets, predictions)`
functions of the decoded strings. `profile_metrics` is a `(targets, predictions, aux_values)`
function of the profile model's per-example sums (models/profile_model.py), and
`masked_residue_accuracy_with_aux` the masked-residue accuracy in that form, so that the joint
profile task's metrics come from one decoding pass (seqio runs the model once per output type).

In the residue metrics only residue letters count: sentinels and task prefixes (written
`<extra_id_k>`, `[NLU]`, `[S2S]`; a `seqio.SentencePieceVocabulary` shows a sentinel as an
unknown piece instead, which is not a letter either) are removed before comparing, so the
metrics work with either vocabulary.
"""
import re
from typing import Mapping, Sequence

import numpy as np

_MARKUP = re.compile(r"<[^<>]*>|\[[^\[\]]*\]")
_NOT_RESIDUE = re.compile(r"[^A-Z]")


def residue_letters(text: str) -> str:
    """The residue letters of a decoded string, in order, without sentinels or prefixes."""
    return _NOT_RESIDUE.sub("", _MARKUP.sub("", text))


def _positional_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> tuple[int, int]:
    if len(targets) != len(predictions):
        raise ValueError("got %d targets but %d predictions" % (len(targets), len(predictions)))
    correct = total = 0
    for target, prediction in zip(targets, predictions):
        expected, predicted = residue_letters(target), residue_letters(prediction)
        correct += sum(a == b for a, b in zip(expected, predicted))
        total += len(expected)
    return correct, total


def masked_residue_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict:
    """Denoising: the fraction of masked residues predicted right, over all examples (in
    percent). The i-th residue of a prediction answers the i-th sentinel of its target; a
    missing answer counts as wrong, extra ones are ignored."""
    correct, total = _positional_accuracy(targets, predictions)
    return {"masked_residue_accuracy": 100.0 * correct / total if total else 0.0}


def continuation_residue_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict:
    """Completion: the fraction of the true continuation's residues that the generated one
    matches position by position, over all examples (in percent); a generated continuation
    shorter than the true one counts its missing residues as wrong."""
    correct, total = _positional_accuracy(targets, predictions)
    return {"continuation_residue_accuracy": 100.0 * correct / total if total else 0.0}


def masked_residue_accuracy_with_aux(targets: Sequence[str], predictions: Sequence[str],
                                     aux_values: Mapping[str, Sequence]) -> dict:
    """`masked_residue_accuracy` as a metric of the model's decodes with aux values."""
    del aux_values  # the decodes alone
    return masked_residue_accuracy(targets, predictions)


def profile_metrics(targets: Sequence[str], predictions: Sequence[str],
                    aux_values: Mapping[str, Sequence]) -> dict:
    """The profile KL per weighted residue and the argmax agreement (the fraction of weighted
    residues whose profile's most likely amino acid is the head's), over all examples, from
    the per-example sums `profile_kl`, `profile_agreement` and `profile_residues`; and the
    number of weighted residues. Named as in t5x.train's summaries."""
    del targets, predictions  # the aux values alone
    residues = float(np.sum(aux_values["profile_residues"], dtype=np.float64))
    if residues == 0:
        raise ValueError("no residue with a profile target in the evaluated examples")
    return {
        "profile/kl_per_residue": float(np.sum(aux_values["profile_kl"], dtype=np.float64))
        / residues,
        "profile/argmax_agreement": float(np.sum(aux_values["profile_agreement"],
                                                 dtype=np.float64)) / residues,
        "profile/residues": residues,
    }
