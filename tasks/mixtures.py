"""The `ankh3_pretrain` mixture, registered by a gin-configurable function.

Importing this module registers the gin configurables `ankh3_pretrain_mixture` (also
`tasks.mixtures.ankh3_pretrain_mixture`) and `ProteinVocabulary` (also
`tasks.vocabulary.ProteinVocabulary`) and nothing else: no task is registered at import, because
T5X parses `--gin.` command-line bindings after the gin files (and their `import` lines), so
tasks built at import could not see them. A T5X run config binds

    MIXTURE_OR_TASK_NAME = @ankh3_pretrain_mixture()
    ankh3_pretrain_mixture.data_dir = 'gs://bucket/uniref50_2024_06'

and gin calls the function, which registers the tasks with every binding in place, when it builds
the `DatasetConfig`. An ablation is then a command-line binding, e.g.
`--gin.ankh3_pretrain_mixture.mask_probabilities="(0.15,)"`.
"""
import math
from typing import Optional, Sequence

import gin
import seqio

from tasks import cluster_sampling
from tasks import preprocessors
from tasks import tasks
from tasks import vocabulary as vocabulary_lib

MIXTURE_NAME = "ankh3_pretrain"
DEFAULT_MASK_PROBABILITIES = (0.1, 0.2, 0.3)


@gin.configurable(module="tasks.mixtures")
def ankh3_pretrain_mixture(data_dir: str,
                           mask_probabilities: Sequence[float] = DEFAULT_MASK_PROBABILITIES,
                           denoising_rates: Optional[Sequence[float]] = None,
                           denoising_share: float = 0.5,
                           cut_fractions: Sequence[float] = (0.5, 0.5),
                           crop_policy: str = preprocessors.RANDOM_CROP,
                           vocabulary: Optional[seqio.Vocabulary] = None,
                           sampling: str = cluster_sampling.REPRESENTATIVES) -> str:
    """Registers (again, replacing earlier registrations) the Ankh3 tasks and the mixture
    `ankh3_pretrain`, and returns the mixture's name.

    Args:
      data_dir: the output directory of `pipelines/` (`train.tfrecord-*`, `validation.tfrecord-*`).
      mask_probabilities: one `[NLU]` denoising task per probability.
      denoising_rates: relative rates of the denoising tasks among themselves (default: equal).
      denoising_share: the fraction of examples drawn from the denoising tasks together; the
        `[S2S]` completion task gets the rest (a task with share 0 is left out).
      cut_fractions: (low, high): completion cuts at floor(f * length), f uniform in
        [low, high]; (0.5, 0.5) is the half of the Ankh3 card.
      crop_policy: `random` (a uniform window of a long sequence) or `start` (its beginning).
      vocabulary: default `ProteinVocabulary()`; any seqio vocabulary that encodes each residue
        and each prefix to one id and has sentinels as extra ids (e.g. a
        `seqio.SentencePieceVocabulary` of Ankh3's `spiece.model`).
      sampling: `representatives` (every record of `train.tfrecord-*` once per epoch) or
        `clusters` (ESM-2 style: a uniform UniRef50 cluster, then a uniform UniRef90 member,
        from the `train_clusters.tfrecord-*` of the job's membership mode; not cacheable, see
        tasks/cluster_sampling.py).

    Feature lengths are not parameters: seqio passes T5X's `TASK_FEATURE_LENGTHS` to the
    preprocessors, which crop and cap to fit them.
    """
    vocabulary = vocabulary or vocabulary_lib.ProteinVocabulary()
    mask_probabilities = [float(p) for p in mask_probabilities]
    if len(set(mask_probabilities)) != len(mask_probabilities):
        raise ValueError("mask probabilities repeat: %r" % (mask_probabilities,))
    denoising_rates = ([1.0] * len(mask_probabilities) if denoising_rates is None
                       else [float(rate) for rate in denoising_rates])
    if len(denoising_rates) != len(mask_probabilities) or min(denoising_rates, default=1) <= 0:
        raise ValueError("need one positive rate per mask probability, got rates %r for %r"
                         % (denoising_rates, mask_probabilities))
    if not 0.0 <= denoising_share <= 1.0 or (denoising_share > 0 and not mask_probabilities):
        raise ValueError("denoising share must be in [0, 1] (and > 0 needs mask probabilities), "
                         "got %r" % denoising_share)

    rates = []
    if denoising_share > 0:
        total = math.fsum(denoising_rates)
        for probability, rate in zip(mask_probabilities, denoising_rates):
            task = tasks.register_denoising_task(data_dir, probability, vocabulary, crop_policy,
                                                 sampling)
            rates.append((task.name, denoising_share * rate / total))
    if denoising_share < 1:
        task = tasks.register_completion_task(data_dir, vocabulary, cut_fractions, crop_policy,
                                              sampling)
        rates.append((task.name, 1.0 - denoising_share))
    seqio.MixtureRegistry.remove(MIXTURE_NAME)
    seqio.MixtureRegistry.add(MIXTURE_NAME, rates)
    return MIXTURE_NAME
