"""The profile prediction task and the `ankh3_profile` mixture (Ankh3 objectives + profiles).

    ankh3_profile_joint          [NLU] + residues masked as ankh3_denoise_pXX (sentinels),
                                 denoising targets, and a profile target at every unmasked
                                 residue (the joint model of profile prediction)
    ankh3_profile_only           [NLU] + unmasked residues, targets EOS alone, profiles

Both read the shards of `python -m pipelines.profiles` (features `id`, `sequence`, `profile`).
The prefix is `[NLU]`: Ankh3 embeds a protein as `[NLU]` + residues, so profile training shapes
the very encoder states that embeddings are read from; an unmasked `[NLU]` input is a
denoising input with nothing masked, whose target is EOS alone. Another prefix (`<unused_0>`,
id 5) is the `prefix` argument.

Metrics (t5x.eval, gin/runs/profile_eval.gin): `tasks.metrics.profile_metrics` (the profile KL
per residue and argmax agreement, from the profile model's aux values), and for the joint form
the masked-residue accuracy of the same decodes.

`ankh3_profile_mixture` registers the Ankh3 tasks (through `tasks.mixtures`), gives them zero
profiles (`profile_preprocessors.add_zero_profiles`), and mixes them with the profile task, so
that one mixture trains every objective. Its examples need `ProfileEncDecFeatureConverter`
(no packing).
"""
import functools
import os
from typing import Optional, Sequence

import gin
import seqio
import tensorflow as tf

from tasks import metrics
from tasks import mixtures
from tasks import preprocessors
from tasks import profile_preprocessors
from tasks import tasks
from tasks import vocabulary as vocabulary_lib

MIXTURE_NAME = "ankh3_profile"
TASK_NAMES = {profile_preprocessors.JOINT: "ankh3_profile_joint",
              profile_preprocessors.PROFILE_ONLY: "ankh3_profile_only"}
# t5x.eval (gin/runs/profile_eval.gin): the profile KL and agreement, and for the joint form the
# masked-residue accuracy, all from the model's decodes with aux values (one decoding pass).
PROFILE_METRIC_FNS = {
    profile_preprocessors.JOINT: [metrics.masked_residue_accuracy_with_aux,
                                  metrics.profile_metrics],
    profile_preprocessors.PROFILE_ONLY: [metrics.profile_metrics],
}
_FEATURE_DESCRIPTION = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "sequence": tf.io.FixedLenFeature([], tf.string),
    "profile": tf.io.FixedLenFeature([], tf.string),
}


def profile_output_features(vocabulary: seqio.Vocabulary) -> dict:
    """inputs/targets as the Ankh3 tasks, plus the two profile features."""
    passthrough = seqio.PassThroughVocabulary(size=0)
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=True),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
        profile_preprocessors.INPUT_PROFILES: seqio.Feature(
            vocabulary=passthrough, add_eos=False, dtype=tf.float32, rank=2, required=False),
        profile_preprocessors.PROFILE_WEIGHTS: seqio.Feature(
            vocabulary=passthrough, add_eos=False, dtype=tf.float32, required=False),
    }


def register_profile_task(data_dir: str, vocabulary: seqio.Vocabulary,
                          form: str = profile_preprocessors.JOINT,
                          mask_probability: float = 0.15, prefix: str = "[NLU]",
                          crop_policy: str = preprocessors.RANDOM_CROP) -> seqio.Task:
    """Registers (or replaces) the profile task of one form (see the module docstring)."""
    name = TASK_NAMES[form]
    salt = tasks._seed_salt(name)  # pylint: disable=protected-access
    source = seqio.TFExampleDataSource(
        split_to_filepattern={split: os.path.join(data_dir, "%s.tfrecord-*" % split)
                              for split in tasks.SPLITS},
        feature_description=_FEATURE_DESCRIPTION)
    seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name, source=source,
        preprocessors=[
            preprocessors.normalize_sequence,
            profile_preprocessors.tokenize_with_profile,
            seqio.CacheDatasetPlaceholder(),
            functools.partial(profile_preprocessors.profile_objective, form=form,
                              mask_probability=mask_probability, prefix=prefix,
                              crop_policy=crop_policy, seed_salt=salt),
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=profile_output_features(vocabulary),
        metric_fns=PROFILE_METRIC_FNS[form])


def with_zero_profiles(task: seqio.Task, vocabulary: seqio.Vocabulary) -> seqio.Task:
    """Registers `task` again, under its name, with zero profiles added to its examples."""
    name = task.name
    seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name, source=task.source,
        preprocessors=list(task.preprocessors) + [profile_preprocessors.add_zero_profiles],
        output_features=profile_output_features(vocabulary),
        metric_fns=list(task.metric_fns))


@gin.configurable(module="tasks.profile_tasks")
def ankh3_profile_mixture(data_dir: str, profile_data_dir: str,
                          form: str = profile_preprocessors.JOINT,
                          profile_share: float = 0.25,
                          profile_mask_probability: float = 0.15,
                          profile_prefix: str = "[NLU]",
                          mask_probabilities: Sequence[float] = mixtures.DEFAULT_MASK_PROBABILITIES,
                          denoising_share: float = 0.5,
                          crop_policy: str = preprocessors.RANDOM_CROP,
                          vocabulary: Optional[seqio.Vocabulary] = None) -> str:
    """Registers the Ankh3 tasks (zero profiles), the profile task and the mixture
    `ankh3_profile`; returns its name.

    Args:
      data_dir: the UniRef job's output (the Ankh3 tasks).
      profile_data_dir: the profiles job's output.
      form: `joint` or `profile_only`.
      profile_share: the fraction of examples from the profile task (1.0: profiles alone).
      profile_mask_probability: the joint form's masking probability.
      mask_probabilities, denoising_share: the Ankh3 tasks, as in `ankh3_pretrain_mixture`
        (`denoising_share=1.0`: masked LM alone + profiles, the paper's setting).
    """
    vocabulary = vocabulary or vocabulary_lib.ProteinVocabulary()
    if not 0.0 < profile_share <= 1.0:
        raise ValueError("profile_share must be in (0, 1], got %r" % profile_share)
    rates = []
    if profile_share < 1.0:
        mixture = seqio.get_mixture_or_task(mixtures.ankh3_pretrain_mixture(
            data_dir, mask_probabilities=mask_probabilities, denoising_share=denoising_share,
            crop_policy=crop_policy, vocabulary=vocabulary))
        total = sum(mixture.get_rate(task) for task in mixture.tasks)
        for task in mixture.tasks:
            with_zero_profiles(task, vocabulary)
            rates.append((task.name, (1.0 - profile_share) * mixture.get_rate(task) / total))
    profile_task = register_profile_task(profile_data_dir, vocabulary, form,
                                         profile_mask_probability, profile_prefix, crop_policy)
    rates.append((profile_task.name, profile_share))
    seqio.MixtureRegistry.remove(MIXTURE_NAME)
    seqio.MixtureRegistry.add(MIXTURE_NAME, rates)
    return MIXTURE_NAME
