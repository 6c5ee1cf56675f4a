"""The T5X run configs (gin/runs/) and ablations (gin/ablations/), by parsing them as t5x.train
does and calling the mixture function they bind: no training.

Each ablation is compared with the demo run config it is added to: it must change what it claims
and nothing else (the mixture's tasks, their rates and objective parameters, the model's size).
"""
import functools
import math

import pytest

pytest.importorskip("t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")

import gin  # noqa: E402
import seqio  # noqa: E402
from t5x import eval as t5x_eval  # noqa: E402
from t5x import infer as t5x_infer  # noqa: E402
from t5x import utils as t5x_utils  # noqa: E402

from models.memory import run_config  # noqa: E402
from tasks import mixtures  # noqa: E402

DEMO = "gin/runs/demo_cpu.gin"
LARGE = "gin/runs/pretrain_ankh3_tpu_v4.gin"
XL = "gin/runs/pretrain_ankh3_xl_tpu_v4.gin"
OBJECTIVE_KEYS = ("mask_probability", "cut_fractions", "crop_policy")


def mixture_contents():
    """Calls the mixture function with the parsed bindings and returns
    `{task name: (rate, {objective parameter: value})}` of the mixture it registers."""
    mixture = seqio.get_mixture_or_task(mixtures.ankh3_pretrain_mixture())
    total = math.fsum(mixture.get_rate(task) for task in mixture.tasks)
    contents = {}
    for task in mixture.tasks:
        objective = {}
        for step in task.preprocessors:
            if isinstance(step, functools.partial):
                objective.update({key: value for key, value in step.keywords.items()
                                  if key in OBJECTIVE_KEYS})
        contents[task.name] = (round(mixture.get_rate(task) / total, 6), objective)
    return contents


def _rounded(contents):
    return {name: (round(rate, 6), objective) for name, (rate, objective) in contents.items()}


def network_dims():
    return {name: gin.query_parameter("Ankh3Config." + name)
            for name in ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers",
                         "num_decoder_layers", "mlp_dim", "mlp_activations")}


def learning_rate_at(steps):
    """The run's learning rate at each of `steps`, from its bound scheduler parameters."""
    names = ("factors", "base_learning_rate", "warmup_steps", "decay_factor")
    kwargs = {name: gin.query_parameter("create_learning_rate_scheduler." + name)
              for name in names}
    schedule = t5x_utils.create_learning_rate_scheduler(**kwargs)
    return [float(schedule(step)) for step in steps]


@pytest.fixture(scope="module")
def demo_mixture():
    with run_config([DEMO]):
        return mixture_contents()


def test_demo_mixture_is_the_ankh3_default(demo_mixture):
    assert demo_mixture == _rounded({
        "ankh3_denoise_p10": (1 / 6, {"mask_probability": 0.1, "crop_policy": "random"}),
        "ankh3_denoise_p20": (1 / 6, {"mask_probability": 0.2, "crop_policy": "random"}),
        "ankh3_denoise_p30": (1 / 6, {"mask_probability": 0.3, "crop_policy": "random"}),
        "ankh3_complete": (0.5, {"cut_fractions": (0.5, 0.5), "crop_policy": "random"}),
    })


@pytest.mark.parametrize("run_file, model_dims, batch, lengths, partitions", [
    (DEMO, {"emb_dim": 64, "num_encoder_layers": 2}, 16, 128, 1),
    (LARGE, {"emb_dim": 1536, "num_encoder_layers": 48, "num_decoder_layers": 24}, 1024, 512, 1),
    (XL, {"emb_dim": 2560, "num_heads": 32, "num_encoder_layers": 48}, 1024, 512, 4),
])
def test_run_config(run_file, model_dims, batch, lengths, partitions):
    with run_config([run_file]):
        dims = network_dims()
        assert {name: dims[name] for name in model_dims} == model_dims
        assert dims["vocab_size"] == 256 and dims["mlp_activations"] == ("silu", "linear")
        assert gin.query_parameter("%BATCH_SIZE") == batch
        assert gin.query_parameter("%TASK_FEATURE_LENGTHS") == {"inputs": lengths,
                                                               "targets": lengths}
        assert gin.query_parameter("PjitPartitioner.num_partitions") == partitions
        # Exact resume: fixed seeds, the dataset iterator in every checkpoint.
        assert gin.query_parameter("%RANDOM_SEED") is not None
        assert gin.query_parameter("train/DatasetConfig.seed") is not None
        assert gin.query_parameter("SaveCheckpointConfig.save_dataset") is True
        assert gin.query_parameter("%USE_CACHED_TASKS") is False
        # The model's vocabulary is the one the tasks tokenize with.
        assert repr(gin.query_parameter("ankh3_pretrain_mixture.vocabulary")) == "%VOCABULARY"
        assert repr(gin.query_parameter("train/DatasetConfig.mixture_or_task_name")) == (
            "%MIXTURE_OR_TASK_NAME")
        assert mixtures.ankh3_pretrain_mixture() == "ankh3_pretrain"


def schedule_problems():
    """What is wrong with the parsed run's learning-rate schedule: it must rise linearly to the
    peak at the end of warm-up, fall linearly, and reach 0 exactly at TRAIN_STEPS."""
    total = gin.query_parameter("%TRAIN_STEPS")
    warmup = gin.query_parameter("create_learning_rate_scheduler.warmup_steps")
    peak = gin.query_parameter("create_learning_rate_scheduler.base_learning_rate")
    points = {
        "half warm-up": (warmup // 2, peak * (warmup // 2) / warmup),
        "end of warm-up": (warmup, peak),
        "half decay": ((warmup + total) // 2,
                       peak * (1 - ((warmup + total) // 2 - warmup) / (total - warmup))),
        "90 % of the decay": (warmup + (total - warmup) * 9 // 10,
                              peak * (1 - ((total - warmup) * 9 // 10) / (total - warmup))),
    }
    rates = learning_rate_at([step for step, _ in points.values()] + [total])
    problems = ["lr at %s (step %d) is %g, expected %g" % (name, step, rate, expected)
                for (name, (step, expected)), rate in zip(points.items(), rates)
                if rate != pytest.approx(expected, rel=1e-3)]
    if rates[-1] > 1e-7:
        problems.append("lr at the last step (%d) is %g, expected 0" % (total, rates[-1]))
    return problems


@pytest.mark.parametrize("run_file", [DEMO, LARGE, XL])
def test_learning_rate_warms_up_linearly_then_decays_to_zero_at_the_last_step(run_file):
    with run_config([run_file]):
        assert schedule_problems() == []


def test_schedule_check_catches_a_decay_factor_not_updated_with_train_steps():
    with run_config([DEMO], ["TRAIN_STEPS = 800"]):
        problems = schedule_problems()
    assert any("half decay" in problem for problem in problems), problems


def _changed(base: dict, other: dict) -> dict:
    return {name: (base.get(name), other.get(name))
            for name in sorted(set(base) | set(other)) if base.get(name) != other.get(name)}


ABLATIONS = {
    "gin/ablations/mlm_only.gin": {
        "ankh3_denoise_p10": ((1 / 6, {"mask_probability": 0.1, "crop_policy": "random"}),
                              (1 / 3, {"mask_probability": 0.1, "crop_policy": "random"})),
        "ankh3_denoise_p20": ((1 / 6, {"mask_probability": 0.2, "crop_policy": "random"}),
                              (1 / 3, {"mask_probability": 0.2, "crop_policy": "random"})),
        "ankh3_denoise_p30": ((1 / 6, {"mask_probability": 0.3, "crop_policy": "random"}),
                              (1 / 3, {"mask_probability": 0.3, "crop_policy": "random"})),
        "ankh3_complete": ((0.5, {"cut_fractions": (0.5, 0.5), "crop_policy": "random"}), None),
    },
    "gin/ablations/completion_only.gin": {
        "ankh3_denoise_p10": ((1 / 6, {"mask_probability": 0.1, "crop_policy": "random"}), None),
        "ankh3_denoise_p20": ((1 / 6, {"mask_probability": 0.2, "crop_policy": "random"}), None),
        "ankh3_denoise_p30": ((1 / 6, {"mask_probability": 0.3, "crop_policy": "random"}), None),
        "ankh3_complete": ((0.5, {"cut_fractions": (0.5, 0.5), "crop_policy": "random"}),
                           (1.0, {"cut_fractions": (0.5, 0.5), "crop_policy": "random"})),
    },
    "gin/ablations/single_mask_probability.gin": {
        "ankh3_denoise_p10": ((1 / 6, {"mask_probability": 0.1, "crop_policy": "random"}), None),
        "ankh3_denoise_p20": ((1 / 6, {"mask_probability": 0.2, "crop_policy": "random"}),
                              (0.5, {"mask_probability": 0.2, "crop_policy": "random"})),
        "ankh3_denoise_p30": ((1 / 6, {"mask_probability": 0.3, "crop_policy": "random"}), None),
    },
    "gin/ablations/mixture_rates.gin": {
        "ankh3_denoise_p10": ((1 / 6, {"mask_probability": 0.1, "crop_policy": "random"}),
                              (0.1875, {"mask_probability": 0.1, "crop_policy": "random"})),
        "ankh3_denoise_p20": ((1 / 6, {"mask_probability": 0.2, "crop_policy": "random"}),
                              (0.1875, {"mask_probability": 0.2, "crop_policy": "random"})),
        "ankh3_denoise_p30": ((1 / 6, {"mask_probability": 0.3, "crop_policy": "random"}),
                              (0.375, {"mask_probability": 0.3, "crop_policy": "random"})),
        "ankh3_complete": ((0.5, {"cut_fractions": (0.5, 0.5), "crop_policy": "random"}),
                           (0.25, {"cut_fractions": (0.5, 0.5), "crop_policy": "random"})),
    },
    "gin/ablations/completion_cut.gin": {
        "ankh3_complete": ((0.5, {"cut_fractions": (0.5, 0.5), "crop_policy": "random"}),
                           (0.5, {"cut_fractions": (0.1, 0.9), "crop_policy": "random"})),
    },
    "gin/ablations/model_base_size.gin": {},
}


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_file_changes_the_mixture_as_it_claims(ablation, demo_mixture):
    with run_config([DEMO, ablation]):
        contents = mixture_contents()
    expected = {name: tuple(None if side is None else (round(side[0], 6), side[1])
                            for side in change)
                for name, change in ABLATIONS[ablation].items()}
    assert _changed(_rounded(demo_mixture), _rounded(contents)) == expected


# The one-line overrides the README and the ablation files document, as t5x.train gets them.
ONE_LINE_OVERRIDES = {
    "gin/ablations/mlm_only.gin": ["ankh3_pretrain_mixture.denoising_share=1.0"],
    "gin/ablations/completion_only.gin": ["ankh3_pretrain_mixture.denoising_share=0.0"],
    "gin/ablations/single_mask_probability.gin": [
        'ankh3_pretrain_mixture.mask_probabilities="(0.2,)"'],
    "gin/ablations/mixture_rates.gin": [
        "ankh3_pretrain_mixture.denoising_share=0.75",
        'ankh3_pretrain_mixture.denoising_rates="(1.0, 1.0, 2.0)"'],
    "gin/ablations/completion_cut.gin": ['ankh3_pretrain_mixture.cut_fractions="(0.1, 0.9)"'],
}


def _as_binding(override: str) -> str:
    """`name=value` as t5x's --gin.name=value becomes a gin binding (the shell strips quotes)."""
    name, value = override.split("=", 1)
    return "%s = %s" % (name, value.strip('"'))


@pytest.mark.parametrize("ablation", sorted(ONE_LINE_OVERRIDES))
def test_one_line_override_equals_its_ablation_file(ablation):
    with run_config([DEMO, ablation]):
        from_file = mixture_contents()
    with run_config([DEMO], [_as_binding(o) for o in ONE_LINE_OVERRIDES[ablation]]):
        from_override = mixture_contents()
    assert from_override == from_file


def test_model_size_ablation_changes_the_network_and_nothing_else(demo_mixture):
    with run_config([LARGE]):
        large = network_dims()
        large_mixture = mixture_contents()
    with run_config([LARGE, "gin/ablations/model_base_size.gin"]):
        base = network_dims()
        base_mixture = mixture_contents()
        assert gin.query_parameter("%BATCH_SIZE") == 1024
    assert _changed(large, base) == {
        "emb_dim": (1536, 768), "num_heads": (16, 12), "mlp_dim": (3840, 3072)}
    assert base["vocab_size"] == 256 and base["mlp_activations"] == ("silu", "linear")
    assert base_mixture == large_mixture == demo_mixture


def test_cpu_model_width_override():
    with run_config([DEMO], ["Ankh3Config.emb_dim = 128", "Ankh3Config.mlp_dim = 256"]):
        dims = network_dims()
    assert (dims["emb_dim"], dims["mlp_dim"]) == (128, 256)


@pytest.mark.parametrize("gin_files, main_module, bindings", [
    (["gin/models/tiny.gin", "gin/runs/eval.gin"], t5x_eval,
     ["TASK_FEATURE_LENGTHS = {'inputs': 128, 'targets': 128}"]),
    (["gin/models/tiny.gin", "gin/runs/infer.gin"], t5x_infer, []),
])
def test_eval_and_infer_configs_parse(gin_files, main_module, bindings):
    with run_config(gin_files, bindings, main_module=main_module):
        assert gin.query_parameter("DatasetConfig.batch_size") in (8, 16)
        if main_module is t5x_eval:
            assert gin.query_parameter("DatasetConfig.split") == "validation"
            assert mixtures.ankh3_pretrain_mixture() == "ankh3_pretrain"
        else:
            assert gin.query_parameter("%TF_EXAMPLE_FILE_TYPE") == "tfrecord"
