"""Evaluation metrics of the Ankh3 tasks, as seqio `predict_metric_fns(targets, predictions)`.

Both take the decoded target and prediction strings. Only residue letters count: sentinels and
task prefixes (written `<extra_id_k>`, `[NLU]`, `[S2S]`; a `seqio.SentencePieceVocabulary` shows a
sentinel as an unknown piece instead, which is not a letter either) are removed before comparing,
so the metrics work with either vocabulary.
"""
import re
from typing import Sequence

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
