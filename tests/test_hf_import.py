"""models.import_hf: a Hugging Face T5 becomes a t5x checkpoint that computes the same and trains.

The suite's trained tiny model comes from here (tests/conftest.py, `continued_run`): a T5 built by
`transformers` with Ankh3's structure and random weights, imported, then trained 5 steps by
t5x.train from the imported checkpoint.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")
pytest.importorskip("torch", reason="torch not installed (requirements.txt)")

from models import param_count  # noqa: E402
from models import hf_parity  # noqa: E402
from models import hf_t5  # noqa: E402
from models import import_hf  # noqa: E402
from models import network  # noqa: E402
from models import t5x_checkpoint  # noqa: E402
from scripts import loss_curves  # noqa: E402


def _flat(params):
    return {path: np.asarray(value) for path, value in hf_t5.flatten(params).items()}


def test_a_transformers_t5_gives_the_same_logits_and_decodes_in_t5x(hf_tiny_t5, tmp_path):
    config, params = import_hf.read_hf(hf_tiny_t5)
    assert (config.num_encoder_layers, config.mlp_activations,
            config.relative_attention_num_buckets) == (2, ("silu", "linear"), 64)
    result = hf_parity.compare(config, params, hf_tiny_t5)
    assert result["encoder_max_abs_diff"] < 1e-4, result
    assert result["logits_max_abs_diff"] < 1e-4, result
    assert result["ours"] == result["theirs"], result


def test_import_writes_a_checkpoint_of_the_weights_and_names_the_model_gin(continued_run,
                                                                           hf_tiny_t5):
    with open(os.path.join(continued_run["imported"], "model.gin")) as f:
        assert re.search(r"^include 'gin/models/tiny.gin'$", f.read(), re.M)
    _, expected = import_hf.read_hf(hf_tiny_t5)
    imported = t5x_checkpoint.read_params(os.path.join(continued_run["imported"],
                                                       "checkpoint_0"))
    expected, imported = _flat(expected), _flat(imported)
    assert expected.keys() == imported.keys()
    for path, value in expected.items():
        np.testing.assert_array_equal(imported[path], value, err_msg=str(path))


def test_profile_head_comes_back_with_the_profile_model_gin(profile_model):
    with open(profile_model["model_gin"]) as f:
        gin_text = f.read()
    includes = re.findall(r"^include '(.*)'$", gin_text, re.M)
    assert includes == ["gin/models/tiny.gin", "gin/models/profile.gin"], gin_text
    expected = _flat(profile_model["params"])
    imported = _flat(t5x_checkpoint.read_params(profile_model["checkpoint"]))
    assert expected.keys() == imported.keys()
    assert ("profile_head", "kernel") in imported
    for path, value in expected.items():
        np.testing.assert_array_equal(imported[path], value, err_msg=str(path))


def test_training_starts_from_the_imported_checkpoint(continued_run):
    with open(continued_run["train_log"]) as f:
        log = f.read()
    assert "Initializing parameters from specific T5X checkpoint %s" % os.path.join(
        continued_run["imported"], "checkpoint_0") in log
    (losses,) = loss_curves.read_scalar_runs(os.path.join(continued_run["model_dir"], "train"),
                                             "loss")
    assert sorted(losses) == list(range(1, 6))
    assert all(np.isfinite(v) for v in losses.values())
    # 5 warm-up steps move the weights a little from the imported ones (a run from scratch
    # would be elsewhere altogether: weights are O(1)).
    start = _flat(t5x_checkpoint.read_params(os.path.join(continued_run["imported"],
                                                          "checkpoint_0")))
    trained = _flat(t5x_checkpoint.read_params(continued_run["checkpoint"]))
    changes = [np.abs(trained[path] - value).max() for path, value in start.items()]
    assert 0 < max(changes) < 0.05, max(changes)


def test_model_gin_states_an_architecture_without_a_config(tmp_path):
    config = network.Ankh3Config(vocab_size=144, emb_dim=48, num_heads=3, head_dim=16,
                                 num_encoder_layers=4, num_decoder_layers=2, mlp_dim=96,
                                 mlp_activations=("gelu", "linear"))
    text = import_hf.model_gin_text(config, "somewhere")
    assert "VOCABULARY = %gin.REQUIRED" in text and "include 'gin/models/" not in text.replace(
        "include 'gin/models/encoder_decoder.gin'", "")
    path = tmp_path / "model.gin"
    path.write_text(text)
    parsed = param_count.network_config_from_gin(str(path))
    for field in import_hf._ARCHITECTURE_FIELDS:
        assert getattr(parsed, field) == getattr(config, field), field


ANKH_LIKE = {"model_type": "t5", "vocab_size": 256, "d_model": 64, "d_kv": 16, "d_ff": 128,
             "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2,
             "feed_forward_proj": "gated-silu", "relative_attention_num_buckets": 64,
             "relative_attention_max_distance": 128, "tie_word_embeddings": False}


@pytest.mark.parametrize("change,message", [
    ({"tie_word_embeddings": True}, "ties the output projection"),
    ({"tie_word_embeddings": True, "scale_decoder_outputs": True}, "ties the output projection"),
    ({"feed_forward_proj": "gated-tanh"}, "feed_forward_proj 'gated-tanh' is not supported"),
    ({"layer_norm_epsilon": 1e-5}, "layer_norm_epsilon 1e-05"),
    ({"model_type": "mt5"}, "model_type 'mt5' is not T5"),
    ({"relative_attention_num_buckets": 3}, "relative_attention_num_buckets must be an even"),
])
def test_configs_it_cannot_represent_are_refused(change, message):
    with pytest.raises(hf_t5.UnsupportedConfigError, match=re.escape(message)):
        hf_t5.network_config(dict(ANKH_LIKE, **change))


def test_transformers_5_config_of_an_untied_t5_is_accepted():
    # transformers 5 writes tie_word_embeddings true (always) and scale_decoder_outputs false.
    config = hf_t5.network_config(dict(ANKH_LIKE, tie_word_embeddings=True,
                                       scale_decoder_outputs=False))
    assert not config.logits_via_embedding


def test_weights_that_do_not_fit_the_config_are_refused(hf_tiny_t5, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(hf_tiny_t5, broken)
    from safetensors.numpy import load_file, save_file
    weights = load_file(str(broken / "model.safetensors"))
    del weights["lm_head.weight"]  # a tied head
    save_file(weights, str(broken / "model.safetensors"))
    with pytest.raises(SystemExit, match=r"has no weight 'lm_head.weight' \(a tied output"):
        import_hf.main(["--hf_dir=%s" % broken, "--output_dir=%s" % (tmp_path / "out")])
    assert not (tmp_path / "out" / "checkpoint_0").exists()
    with open(broken / "config.json") as f:
        config = json.load(f)
    config["d_ff"] = 96
    with open(broken / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(hf_t5.UnsupportedConfigError, match=r"has shape \(128, 64\), the config "
                       r"implies \(96, 64\)"):
        hf_t5.from_hf_state_dict(hf_t5.network_config(config), load_file(
            os.path.join(hf_tiny_t5, "model.safetensors")))
