"""Held-out masked-residue accuracy of a checkpoint, teacher-forced, with its bootstrap interval.

    python -m probes.masked_lm --checkpoint=DIR/checkpoint_N --gin_file=gin/models/small.gin \
      --data_dir=CORPUS --output=OUT.json [--mask_probability=0.2] [--examples=512]

The examples are the `[NLU]` denoising task at one masking probability (`ankh3_denoise_p20`
for 0.2) on the validation split of CORPUS (an output of `pipelines.uniref`), unshuffled and
with a fixed seed, so every checkpoint is scored on the same crops and the same masks. The
decoder is fed the true targets (teacher forcing), and each masked residue counts as right when
the argmax of the logits at its target position is that residue: the masked-LM accuracy that
BERT-style papers report. Greedy decoding (`t5x.eval`) asks more: a model that ends its answer
after too few sentinels scores every residue it left out as wrong.

Reported with it, on the same masked residues: what always answering the corpus's most frequent
residue (`L`) would score, and the bootstrap interval over examples (`probes.linear`).
"""
import argparse
import json
import os
from typing import Optional, Sequence

import numpy as np

from models import network
from models import param_count
from models import t5x_checkpoint
from probes import linear
from tasks import vocabulary as vocabulary_lib

FEATURE_LENGTHS = {"inputs": 128, "targets": 128}
EXAMPLE_SEED = 0
BATCH_SIZE = 32
MOST_FREQUENT_RESIDUE = "L"


def denoising_examples(data_dir: str, mask_probability: float, feature_lengths: dict,
                       count: int) -> list[dict]:
    """The first `count` examples of the `[NLU]` task at `mask_probability` on the validation
    split: dicts of `inputs` and `targets` id arrays (EOS included, unpadded)."""
    import seqio  # pylint: disable=import-outside-toplevel
    from tasks import mixtures  # pylint: disable=import-outside-toplevel
    from tasks import tasks  # pylint: disable=import-outside-toplevel

    mixtures.ankh3_pretrain_mixture(data_dir, mask_probabilities=(mask_probability,),
                                    denoising_share=1.0)
    task = seqio.get_mixture_or_task(tasks.denoising_task_name(mask_probability))
    dataset = task.get_dataset(feature_lengths, split="validation", shuffle=False,
                               seed=EXAMPLE_SEED)
    examples = [{"inputs": np.asarray(e["inputs"]), "targets": np.asarray(e["targets"])}
                for e in dataset.take(count).as_numpy_iterator()]
    if len(examples) < count:
        raise ValueError("%s: the validation split gave %d examples, %d asked for" % (
            data_dir, len(examples), count))
    return examples


def _padded(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def predicted_targets(config: network.Ankh3Config, params: dict, examples: Sequence[dict],
                      feature_lengths: dict) -> list[np.ndarray]:
    """Per example, the argmax id at each target position with the true targets fed to the
    decoder (decoder input = targets shifted right, starting with id 0)."""
    import jax  # pylint: disable=import-outside-toplevel

    model = network.Ankh3Transformer(config)

    @jax.jit
    def argmax_logits(encoder_tokens, decoder_inputs, decoder_targets):
        logits = model.apply({"params": params}, encoder_tokens, decoder_inputs,
                             decoder_targets, enable_dropout=False)
        return logits.argmax(axis=-1)

    predictions = []
    for start in range(0, len(examples), BATCH_SIZE):
        batch = examples[start:start + BATCH_SIZE]
        # Every batch padded to BATCH_SIZE rows: one compiled shape.
        rows = list(batch) + [batch[0]] * (BATCH_SIZE - len(batch))
        targets = _padded([e["targets"] for e in rows], feature_lengths["targets"])
        decoder_inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], 1)
        argmax = np.asarray(argmax_logits(
            _padded([e["inputs"] for e in rows], feature_lengths["inputs"]), decoder_inputs,
            targets))
        predictions.extend(argmax[i, :len(e["targets"])] for i, e in enumerate(batch))
    return predictions


def score(examples: Sequence[dict], predictions: Sequence[np.ndarray], seed: int) -> dict:
    """Accuracy at the masked residues (the target positions that hold a residue), its bootstrap
    interval over examples, and the always-`L` rate on the same residues."""
    residue_ids = {vocabulary_lib.ProteinVocabulary().encode(r)[0]
                   for r in vocabulary_lib.RESIDUES}
    l_id = vocabulary_lib.ProteinVocabulary().encode(MOST_FREQUENT_RESIDUE)[0]
    correct, counts, always_l = [], [], 0
    for example, predicted in zip(examples, predictions):
        targets = example["targets"]
        at_residues = np.isin(targets, list(residue_ids))
        correct.append(int((predicted[at_residues] == targets[at_residues]).sum()))
        counts.append(int(at_residues.sum()))
        always_l += int((targets[at_residues] == l_id).sum())
    result = linear.bootstrap_accuracy(correct, counts, seed)
    result.update(examples=len(counts), masked_residues=int(sum(counts)),
                  always_l=always_l / sum(counts))
    return result


def evaluate(checkpoint: str, gin_file: str, data_dir: str, mask_probability: float = 0.2,
             num_examples: int = 512, feature_lengths: Optional[dict] = None,
             seed: int = 0) -> dict:
    """The teacher-forced masked-residue accuracy of `checkpoint` (module docstring)."""
    feature_lengths = feature_lengths or FEATURE_LENGTHS
    config = param_count.network_config_from_gin(gin_file)
    # Every parameter of the network (a profile head, if the checkpoint has one, is not read).
    params = t5x_checkpoint.read_params(checkpoint, ("token_embedder", "encoder", "decoder"))
    examples = denoising_examples(data_dir, mask_probability, feature_lengths, num_examples)
    result = score(examples, predicted_targets(config, params, examples, feature_lengths), seed)
    result.update(mask_probability=mask_probability, checkpoint=checkpoint)
    return result


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a t5x checkpoint directory")
    parser.add_argument("--gin_file", required=True, help="the model gin (gin/models/*.gin)")
    parser.add_argument("--data_dir", required=True, help="an output of pipelines.uniref")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--mask_probability", type=float, default=0.2)
    parser.add_argument("--examples", type=int, default=512,
                        help="validation examples scored (the first N, unshuffled)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    result = evaluate(args.checkpoint, args.gin_file, args.data_dir, args.mask_probability,
                      args.examples, seed=args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
