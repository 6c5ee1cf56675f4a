"""The profile run configs and ablations, parsed as t5x.train does (no training)."""
import math

import pytest

pytest.importorskip("t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")

import gin  # noqa: E402
import seqio  # noqa: E402

from models.memory import run_config  # noqa: E402
from tasks import profile_tasks  # noqa: E402

DEMO = "gin/runs/profile_demo_cpu.gin"
TPU = "gin/runs/profile_ankh3_tpu_v4.gin"
PROFILE_DIR = ["PROFILE_DATA_DIR = '/nonexistent/profiles'"]


def _rates():
    mixture = seqio.get_mixture_or_task(profile_tasks.ankh3_profile_mixture())
    total = math.fsum(mixture.get_rate(task) for task in mixture.tasks)
    return {task.name: round(mixture.get_rate(task) / total, 6) for task in mixture.tasks}


@pytest.mark.parametrize("run", [DEMO, TPU])
def test_profile_runs_mix_every_objective_unpacked(run):
    with run_config([run], PROFILE_DIR):
        assert _rates() == {"ankh3_denoise_p10": 0.125, "ankh3_denoise_p20": 0.125,
                            "ankh3_denoise_p30": 0.125, "ankh3_complete": 0.375,
                            "ankh3_profile_joint": 0.25}
        assert gin.query_parameter("train/utils.DatasetConfig.pack") is False
        assert gin.query_parameter("train_eval/utils.DatasetConfig.pack") is False
        assert gin.query_parameter("%PROFILE_WEIGHT") == 1.0


@pytest.mark.parametrize("ablation, expected", [
    ("gin/ablations/profile_only.gin", {"ankh3_profile_only": 0.25}),
    ("gin/ablations/mlm_profile.gin", {"ankh3_denoise_p10": 0.25, "ankh3_denoise_p20": 0.25,
                                       "ankh3_denoise_p30": 0.25, "ankh3_profile_joint": 0.25}),
])
def test_profile_ablations_change_the_mixture_as_they_claim(ablation, expected):
    with run_config([DEMO, ablation], PROFILE_DIR):
        rates = _rates()
    if ablation.endswith("profile_only.gin"):
        assert "ankh3_profile_joint" not in rates and rates["ankh3_profile_only"] == 0.25
    else:
        assert rates == expected


def test_profile_weight_ablation_and_start_from_ankh3():
    with run_config([DEMO, "gin/ablations/profile_weight.gin", "gin/runs/profile_from_ankh3.gin"],
                PROFILE_DIR + ["ANKH3_CHECKPOINT = '/nonexistent/checkpoint_400'"]):
        assert gin.query_parameter("%PROFILE_WEIGHT") == 10.0
        assert gin.query_parameter("utils.RestoreCheckpointConfig.strict") is False
        assert gin.query_parameter("utils.RestoreCheckpointConfig.fallback_to_scratch") is True
