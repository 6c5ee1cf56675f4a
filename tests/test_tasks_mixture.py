"""Tests of the Ankh3 tasks and mixture: registration, seeds, gin (through T5X), metrics, the
seqio Beam cache job, and the tasks reading shards that `pipelines.uniref` writes."""
import os
import random
import subprocess
import sys

import gin
import pytest
import seqio
import tensorflow as tf

from tasks import cache_registration
from tasks import metrics
from tasks import mixtures
from tasks import tasks as tasks_lib
from tasks import vocabulary as vocabulary_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = vocabulary_lib.ProteinVocabulary()
LENGTHS = {"inputs": 128, "targets": 128}


def write_shard(path, records):
    """Writes (id, sequence) pairs as the tf.train.Examples of the pipelines/ data contract."""
    with tf.io.TFRecordWriter(path) as writer:
        for record_id, sequence in records:
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record_id.encode()])),
                "cluster_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[record_id.encode()])),
                "sequence": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[sequence.encode()])),
                "length": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(sequence)])),
            })).SerializeToString())


def read_sequences(pattern):
    """{id: sequence} of the shards matching `pattern`."""
    dataset = tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)).map(
        lambda record: tf.io.parse_single_example(record, {
            "id": tf.io.FixedLenFeature([], tf.string),
            "sequence": tf.io.FixedLenFeature([], tf.string)}))
    return {ex["id"].decode(): ex["sequence"].decode() for ex in dataset.as_numpy_iterator()}


def original_window(ex):
    """The residues an example shows: inputs with sentinels filled from the targets (denoising)
    or inputs followed by targets (completion), without prefix and EOS."""
    inputs, targets = ex["inputs"].tolist()[1:-1], ex["targets"].tolist()[:-1]
    if ex["inputs"][0] == VOCAB.encode("[S2S]")[0]:
        return VOCAB.decode(inputs + targets)
    hidden = dict(zip(targets[0::2], targets[1::2]))
    return VOCAB.decode([hidden.get(i, i) for i in inputs])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Unit-test shards: 120 train and 12 validation proteins of 1 to 900 residues."""
    data_dir = tmp_path_factory.mktemp("shards")
    rng = random.Random(0)
    for split, count, shard_count in (("train", 120, 2), ("validation", 12, 1)):
        records = [("%s_%d" % (split, i), "".join(
            rng.choice(vocabulary_lib.RESIDUES[:20]) for _ in range(rng.randint(1, 900))))
            for i in range(count)]
        for shard in range(shard_count):
            write_shard(str(data_dir / ("%s.tfrecord-%05d-of-%05d" % (split, shard, shard_count))),
                        records[shard::shard_count])
    return str(data_dir)


@pytest.fixture
def clean_gin():
    """A clean gin config, and seqio's global cache directories (where a test adds the suite's
    seqio cache) as they were, so no other test module finds this module's caches."""
    gin.clear_config()
    cache_dirs = list(seqio.utils.get_global_cache_dirs())
    yield
    seqio.set_global_cache_dirs(cache_dirs)
    gin.clear_config()


IMPORT_CHECK = "\n".join([
    "import gin, seqio",
    "before = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())",
    "import tasks.mixtures",
    "after = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())",
    "assert before == after, after - before",
    "for name in ('ankh3_pretrain_mixture', 'tasks.mixtures.ankh3_pretrain_mixture',",
    "             'ProteinVocabulary', 'tasks.vocabulary.ProteinVocabulary'):",
    "    gin.get_configurable(name)",
])


@pytest.fixture(scope="module", autouse=True)
def import_check(tmp_path_factory):
    """IMPORT_CHECK in a fresh interpreter, started before the module's first test (it runs
    while the others do): its process and output file."""
    output = tmp_path_factory.mktemp("import_check") / "output.log"
    with open(output, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", IMPORT_CHECK], cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT)
    yield process, output
    if process.poll() is None:
        process.kill()
        process.wait()


def take(name, count, seed, lengths=LENGTHS):
    dataset = seqio.get_mixture_or_task(name).get_dataset(
        lengths, seed=seed, shuffle=True, num_epochs=1)
    return list(dataset.take(count).as_numpy_iterator())


def test_mixture_registration_is_idempotent_with_default_rates(shards):
    for _ in range(2):
        name = mixtures.ankh3_pretrain_mixture(data_dir=shards)
    mixture = seqio.get_mixture_or_task(name)
    assert name == "ankh3_pretrain"
    rates = {task.name: mixture.get_rate(task) for task in mixture.tasks}
    assert rates == pytest.approx({"ankh3_denoise_p10": 1 / 6, "ankh3_denoise_p20": 1 / 6,
                                   "ankh3_denoise_p30": 1 / 6, "ankh3_complete": 0.5})
    mixtures.ankh3_pretrain_mixture(data_dir=shards, mask_probabilities=(0.15, 0.125),
                                    denoising_rates=(3, 1), denoising_share=1.0)
    mixture = seqio.get_mixture_or_task(name)
    assert {task.name: mixture.get_rate(task) for task in mixture.tasks} == pytest.approx(
        {"ankh3_denoise_p15": 0.75, "ankh3_denoise_p12_5": 0.25})
    with pytest.raises(ValueError, match="one positive rate"):
        mixtures.ankh3_pretrain_mixture(data_dir=shards, denoising_rates=(1, 1))


def test_mixture_examples_fit_and_show_original_proteins(shards):
    name = mixtures.ankh3_pretrain_mixture(data_dir=shards)
    originals = read_sequences(os.path.join(shards, "train.tfrecord-*"))
    examples = take(name, 200, seed=11)
    prefixes = {VOCAB.decode(ex["inputs"][:1]) for ex in examples}
    assert prefixes == {"[NLU]", "[S2S]"}
    for ex in examples:
        assert set(ex) == {"inputs", "targets"}
        assert ex["inputs"].dtype == ex["targets"].dtype == "int32"
        assert len(ex["inputs"]) <= LENGTHS["inputs"] and len(ex["targets"]) <= LENGTHS["targets"]
        assert ex["inputs"][-1] == ex["targets"][-1] == VOCAB.eos_id
        window = original_window(ex)
        assert any(window in sequence for sequence in originals.values())


def test_same_seed_same_examples(shards):
    name = mixtures.ankh3_pretrain_mixture(data_dir=shards)
    first, again, other = take(name, 30, 5), take(name, 30, 5), take(name, 30, 6)
    as_lists = lambda examples: [(e["inputs"].tolist(), e["targets"].tolist()) for e in examples]
    assert as_lists(first) == as_lists(again)
    assert as_lists(first) != as_lists(other)


def test_sibling_tasks_do_not_mirror_each_other(shards):
    mixtures.ankh3_pretrain_mixture(data_dir=shards)
    p10 = take("ankh3_denoise_p10", 20, 5)
    p20 = take("ankh3_denoise_p20", 20, 5)
    windows = lambda examples: [original_window(e) for e in examples]
    assert windows(p10) != windows(p20)


T5X_RUN_GIN = """
from __gin__ import dynamic_registration
from t5x import utils
from tasks import mixtures

MIXTURE_OR_TASK_NAME = @mixtures.ankh3_pretrain_mixture()
mixtures.ankh3_pretrain_mixture.data_dir = %r
utils.get_dataset.cfg = @train/utils.DatasetConfig()
train/utils.DatasetConfig:
  mixture_or_task_name = %%MIXTURE_OR_TASK_NAME
  task_feature_lengths = {'inputs': 128, 'targets': 128}
  split = 'train'
  batch_size = 64
  shuffle = True
  seed = 7
"""


def t5x_batch(gin_file, bindings):
    """A batch as T5X's training loop builds it: gin files, then --gin bindings, then the
    DatasetConfig (whose mixture name gin evaluates by calling the registration)."""
    t5x_utils = pytest.importorskip(
        "t5x.utils", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")
    from t5x import gin_utils
    gin_utils.parse_gin_flags([], [gin_file], bindings)
    dataset = gin.get_configurable(t5x_utils.get_dataset)(
        shard_id=0, num_shards=1, feature_converter_cls=seqio.EncDecFeatureConverter)
    return next(iter(dataset))


def test_t5x_gin_override_changes_the_examples(shards, tmp_path, clean_gin):
    gin_file = tmp_path / "run.gin"
    gin_file.write_text(T5X_RUN_GIN % shards)
    default = t5x_batch(str(gin_file), [])
    gin.clear_config()
    only_completion = t5x_batch(
        str(gin_file), ["mixtures.ankh3_pretrain_mixture.denoising_share = 0.0"])
    first_tokens = lambda batch: set(batch["encoder_input_tokens"][:, 0].numpy().tolist())
    assert first_tokens(default) == {3, 4}  # [NLU] and [S2S]
    assert first_tokens(only_completion) == {4}
    assert seqio.get_mixture_or_task("ankh3_pretrain").tasks[0].name == "ankh3_complete"


def test_short_and_module_gin_names(shards, clean_gin):
    gin.parse_config("\n".join([
        "import tasks.mixtures",
        "ankh3_pretrain_mixture.data_dir = %r" % shards,
        "ankh3_pretrain_mixture.vocabulary = @ProteinVocabulary()",
        "MIXTURE = @tasks.mixtures.ankh3_pretrain_mixture()",
        "VOCABULARY = @tasks.vocabulary.ProteinVocabulary()",
        "tasks.mixtures.ankh3_pretrain_mixture.mask_probabilities = (0.4,)",
        "ankh3_pretrain_mixture.crop_policy = 'start'",
    ]))
    name = mixtures.ankh3_pretrain_mixture()
    assert sorted(t.name for t in seqio.get_mixture_or_task(name).tasks) == [
        "ankh3_complete", "ankh3_denoise_p40"]
    assert gin.query_parameter("%MIXTURE").selector == "tasks.mixtures.ankh3_pretrain_mixture"
    assert gin.query_parameter("%VOCABULARY").selector == "tasks.vocabulary.ProteinVocabulary"


def test_metrics_on_hand_made_predictions():
    targets = ["<extra_id_0>K<extra_id_1>V<extra_id_2>N<extra_id_3>P", "<extra_id_0>A"]
    predictions = ["<extra_id_0>K<extra_id_1>L<extra_id_2>N", "<extra_id_0>A<extra_id_1>W"]
    assert metrics.masked_residue_accuracy(targets, predictions) == {
        "masked_residue_accuracy": pytest.approx(100 * 3 / 5)}
    assert metrics.continuation_residue_accuracy(["INSRGP", "MK"], ["INSAG", "MKKK"]) == {
        "continuation_residue_accuracy": pytest.approx(100 * 6 / 8)}
    # SentencePiece shows sentinels as an unknown piece; only residue letters count.
    assert metrics.masked_residue_accuracy([" ⁇ K ⁇ V"], ["⁇K⁇V"]) == {
        "masked_residue_accuracy": 100.0}
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        metrics.continuation_residue_accuracy(["A", "B"], ["A"])


def test_tasks_carry_their_metrics(shards):
    mixtures.ankh3_pretrain_mixture(data_dir=shards)
    assert seqio.get_mixture_or_task("ankh3_denoise_p20").predict_metric_fns == [
        metrics.masked_residue_accuracy]
    assert seqio.get_mixture_or_task("ankh3_complete").predict_metric_fns == [
        metrics.continuation_residue_accuracy]


@pytest.fixture(scope="module")
def pipeline_output(rehearsal_releases):
    """Shards written in this session by the real UniRef pipeline from the bundled sample, in
    8 train shards (tests/conftest.py: `rehearsal_releases`)."""
    return rehearsal_releases[8]


def test_tasks_read_real_pipeline_shards(pipeline_output):
    output_dir, manifest = pipeline_output
    originals = read_sequences(os.path.join(output_dir, "train.tfrecord-*"))
    assert len(originals) == manifest["counts"]["train"] > 800
    mixtures.ankh3_pretrain_mixture(data_dir=output_dir)
    for task_name in ("ankh3_denoise_p20", "ankh3_complete"):
        task = seqio.get_mixture_or_task(task_name)
        # One epoch without feature lengths: one example per protein, nothing cropped.
        seen = {}
        for ex in task.get_dataset(None, shuffle=False, seed=1).as_numpy_iterator():
            seen[ex["id"].decode()] = original_window(ex)
        assert seen == originals
        for ex in task.get_dataset({"inputs": 512, "targets": 512}, seed=2).take(100):
            ex = {k: v.numpy() for k, v in ex.items()}
            assert len(ex["inputs"]) <= 512 and len(ex["targets"]) <= 512
            assert original_window(ex) in originals[ex["id"].decode()]


def test_seqio_beam_cache_job_then_read_cached_task(clean_gin, pipeline_output, seqio_cache):
    output_dir, manifest = pipeline_output
    cache_dir = seqio_cache["dir"]  # tests/conftest.py: tasks.cache_tasks.run, mask p=0.15
    assert seqio_cache["data_dir"] == output_dir
    # The job adds its output to seqio's cache dirs, where the tasks find it.
    assert cache_dir in seqio_cache["global_cache_dirs_after_run"]
    seqio.add_global_cache_dirs([cache_dir])
    mixtures.ankh3_pretrain_mixture(data_dir=output_dir, mask_probabilities=(0.15,))
    originals = read_sequences(os.path.join(output_dir, "train.tfrecord-*"))
    for task_name in ("ankh3_denoise_p15", "ankh3_complete"):
        task_dir = os.path.join(cache_dir, task_name)
        assert os.path.exists(os.path.join(task_dir, "COMPLETED"))
        # One cache shard per train file (8, more than --min_shards=4).
        assert len(tf.io.gfile.glob(os.path.join(task_dir, "train.tfrecord-*-of-00008"))) == 8
        task = seqio.get_mixture_or_task(task_name)
        task._cache_dir = None  # seqio remembers where it found a cache; look again
        assert task.cache_dir == task_dir
        assert task.get_cached_stats("train")["examples"] == manifest["counts"]["train"]
        cached = {ex["id"].decode(): original_window(ex) for ex in task.get_dataset(
            None, use_cached=True, shuffle=False, seed=3).as_numpy_iterator()}
        assert cached == originals


def test_cache_job_workers_register_from_the_pipeline_option(shards, clean_gin):
    from apache_beam.options.value_provider import RuntimeValueProvider
    seqio.TaskRegistry.remove("ankh3_denoise_p35")
    config = "\n".join(["import tasks.mixtures",
                        "ankh3_pretrain_mixture.data_dir = %r" % shards,
                        "ankh3_pretrain_mixture.mask_probabilities = (0.35,)"])
    RuntimeValueProvider.set_runtime_options({cache_registration.TASKS_GIN_OPTION: config})
    try:
        cache_registration.register_from_pipeline_options()
    finally:
        RuntimeValueProvider.set_runtime_options(None)
    assert "ankh3_denoise_p35" in seqio.TaskRegistry.names()
    assert tasks_lib.denoising_task_name(0.35) == "ankh3_denoise_p35"


def test_import_registers_gin_names_and_nothing_else(import_check):
    """Importing tasks.mixtures in a fresh interpreter registers its gin configurables and no
    task or mixture."""
    process, output = import_check
    status = process.wait(timeout=600)
    assert status == 0, output.read_text()[-3000:]
