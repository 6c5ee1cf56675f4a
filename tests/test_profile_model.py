"""The profile model: head, loss, metrics, and initialisation from a plain Ankh3 model."""
import numpy as np
import pytest

pytest.importorskip("t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import traverse_util  # noqa: E402
from t5x import adafactor  # noqa: E402
from t5x import models  # noqa: E402

from models import network  # noqa: E402
from models import profile_model  # noqa: E402
from tasks import vocabulary  # noqa: E402

CONFIG = network.Ankh3Config(vocab_size=256, emb_dim=32, num_heads=2, num_encoder_layers=1,
                             num_decoder_layers=1, head_dim=16, mlp_dim=64, dtype="float32")
SHAPES = {"encoder_input_tokens": (2, 8), "decoder_input_tokens": (2, 6)}


def _model(cls, module, **kwargs):
    vocab = vocabulary.ProteinVocabulary()
    return cls(module=module, input_vocabulary=vocab, output_vocabulary=vocab,
               optimizer_def=adafactor.Adafactor(), **kwargs)


def _batch(profile_weights):
    rng = np.random.default_rng(0)
    profiles = rng.dirichlet(np.ones(20), size=(2, 8)).astype(np.float32)
    profiles[0, 3] = 0.0
    return {
        "encoder_input_tokens": jnp.array([[3, 8, 9, 10, 11, 12, 1, 0], [3, 7, 7, 1, 0, 0, 0, 0]]),
        "decoder_input_tokens": jnp.array([[0, 255, 9, 1, 0, 0], [0, 1, 0, 0, 0, 0]]),
        "decoder_target_tokens": jnp.array([[255, 9, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]),
        "decoder_loss_weights": jnp.array([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]),
        "encoder_input_profiles": jnp.array(profiles),
        "encoder_profile_weights": jnp.array(profile_weights, jnp.float32),
    }


def test_loss_is_cross_entropy_plus_weighted_kl_and_metrics():
    model = _model(profile_model.ProfileEncoderDecoderModel,
                   profile_model.ProfileAnkh3Transformer(CONFIG), profile_weight=2.0)
    params = model.get_initial_variables(jax.random.PRNGKey(0), SHAPES)["params"]
    weights = [[0, 1, 1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0]]
    loss, metrics = model.loss_fn(params, _batch(weights), None)
    zero_loss, zero_metrics = model.loss_fn(params, _batch(np.zeros((2, 8))), None)
    _, profile_logits = model._compute_logits_and_profile_logits(params, _batch(weights))
    profiles = np.asarray(_batch(weights)["encoder_input_profiles"], np.float64)
    log_q = np.asarray(jax.nn.log_softmax(profile_logits), np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(profiles > 0, profiles * (np.log(profiles) - log_q), 0).sum(-1)
    expected_kl = (kl * np.array(weights)).sum()
    np.testing.assert_allclose(float(loss - zero_loss), 2.0 * expected_kl, rtol=1e-5)
    # Without profiles the loss is the plain model's (same parameters, head unused).
    plain = _model(models.EncoderDecoderModel, network.Ankh3Transformer(CONFIG))
    plain_params = {k: v for k, v in params.items() if k != "profile_head"}
    plain_loss, _ = plain.loss_fn(plain_params, _batch(np.zeros((2, 8))), None)
    np.testing.assert_allclose(float(zero_loss), float(plain_loss), rtol=1e-6)
    computed = {name: metric.compute() for name, metric in metrics.items()
                if name.startswith("profile/")}
    np.testing.assert_allclose(computed["profile/kl_per_residue"], expected_kl / 7, rtol=1e-5)
    assert computed["profile/residues"] == 7
    agree = (profiles.argmax(-1) == log_q.argmax(-1)) * np.array(weights)
    np.testing.assert_allclose(computed["profile/argmax_agreement"], agree.sum() / 7, rtol=1e-6)
    assert zero_metrics["profile/residues"].compute() == 0


def test_plain_ankh3_parameters_are_the_profile_model_parameters_but_the_head():
    plain = _model(models.EncoderDecoderModel, network.Ankh3Transformer(CONFIG))
    profile = _model(profile_model.ProfileEncoderDecoderModel,
                     profile_model.ProfileAnkh3Transformer(CONFIG))
    plain_params = traverse_util.flatten_dict(
        plain.get_initial_variables(jax.random.PRNGKey(0), SHAPES)["params"])
    profile_params = traverse_util.flatten_dict(
        profile.get_initial_variables(jax.random.PRNGKey(0), SHAPES)["params"])
    extra = set(profile_params) - set(plain_params)
    assert extra == {("profile_head", "kernel")}
    assert profile_params[("profile_head", "kernel")].shape == (32, 20)
    assert all(plain_params[k].shape == profile_params[k].shape for k in plain_params)
    # The decoder logits (scoring, decoding, embeddings) do not depend on the head.
    batch = _batch(np.zeros((2, 8)))
    params = traverse_util.unflatten_dict(profile_params)
    logits = profile._compute_logits(params, batch)
    plain_logits = plain._compute_logits(
        {k: v for k, v in params.items() if k != "profile_head"}, batch)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(plain_logits), rtol=1e-6)
