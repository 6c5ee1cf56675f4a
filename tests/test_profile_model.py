"""The profile model: head, loss, metrics, initialisation from a plain Ankh3 model, and the
profile metrics of `t5x.eval` (gin/runs/profile_eval.gin)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import tensorflow as tf  # noqa: E402
from flax import traverse_util  # noqa: E402
from t5x import adafactor  # noqa: E402
from t5x import models  # noqa: E402

from models import embed  # noqa: E402
from models import network  # noqa: E402
from models import profile_model  # noqa: E402
from pipelines import profile_hmm  # noqa: E402
from pipelines import profiles as profiles_job  # noqa: E402
from pipelines import tfrecords  # noqa: E402
from tasks import profile_preprocessors  # noqa: E402
from tasks import vocabulary  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


# Real sequences (globins4 and fn3 seed rows, ungapped), each shorter than the eval's inputs.
EVAL_SEQUENCES = (
    "VLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF",
    "VHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFFESFGDLST",
    "SAPRNVQVRTLSSSTMVITWEPPETPNGQVTGYKVYYTTNSNQPEASW",
    "DAPKDLSATEVQSETAVITWRPPRAPVTDYLLTYESIDGRVKEVILDP",
)


@pytest.fixture(scope="module", autouse=True)
def profile_eval(profile_model, tmp_path_factory):
    """`t5x.eval` with gin/runs/profile_eval.gin on a validation shard of EVAL_SEQUENCES with
    seeded random profiles, started in the background before the module's first test (it runs
    while the in-process tests do): its process, log, output dir and the quantized profiles."""
    root = tmp_path_factory.mktemp("profile_eval")
    rng = np.random.default_rng(1)
    quantized = []
    with tf.io.TFRecordWriter(str(root / "validation.tfrecord-00000-of-00001")) as out:
        for i, sequence in enumerate(EVAL_SEQUENCES):
            profile = profile_hmm.quantize_profile(
                rng.dirichlet(np.full(20, 0.3), size=len(sequence)).astype(np.float32))
            quantized.append(profile)
            out.write(tfrecords.profile_example(profiles_job.ProfileRecord(
                "seq%d" % i, "PF00042", sequence.encode(), b"", profile.tobytes(), "x", i), 4))
    log_path = root / "eval.log"
    with open(log_path, "w") as log:
        evaluation = subprocess.Popen([
            sys.executable, "-m", "t5x.eval", "--gin_file=" + profile_model["model_gin"],
            "--gin_file=gin/runs/profile_eval.gin",
            "--gin.CHECKPOINT_PATH='%s'" % profile_model["checkpoint"],
            "--gin.EVAL_OUTPUT_DIR='%s'" % (root / "eval"),
            "--gin.DATA_DIR='%s'" % root, "--gin.PROFILE_DATA_DIR='%s'" % root,
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 4}",
            "--gin.ankh3_profile_mixture.profile_share=1.0",
            "--gin.ankh3_profile_mixture.form='profile_only'"], cwd=REPO_ROOT, stdout=log,
            stderr=subprocess.STDOUT)
    yield {"process": evaluation, "log": log_path, "output": root / "eval",
           "quantized": quantized}
    if evaluation.poll() is None:
        evaluation.kill()
        evaluation.wait()


def test_eval_reports_profile_kl_and_agreement(profile_model, profile_eval):
    """`t5x.eval` with gin/runs/profile_eval.gin on the profile task alone (profile-only form:
    the whole `[NLU]` + residues input, as models.embed reads it): its KL per residue and argmax
    agreement are the ones computed here from the checkpoint's predicted profiles."""
    encoder = embed.load_encoder(checkpoint=profile_model["checkpoint"],
                                 gin_file=profile_model["model_gin"])
    predicted = encoder.profiles(encoder.embed(list(EVAL_SEQUENCES), progress=False))
    kl = agree = 0.0
    for q, p_hat in zip(profile_eval["quantized"], predicted):
        p = q.astype(np.float64) / profile_preprocessors.QUANTIZATION_LEVELS
        with np.errstate(divide="ignore", invalid="ignore"):
            kl += np.where(p > 0, p * (np.log(p) - np.log(p_hat)), 0).sum()
        agree += (p.argmax(-1) == p_hat.argmax(-1)).sum()
    residues = sum(map(len, EVAL_SEQUENCES))
    status = profile_eval["process"].wait(timeout=600)
    assert status == 0, "t5x.eval exited with %s:\n%s" % (
        status, profile_eval["log"].read_text()[-3000:])
    with open(profile_eval["output"] / "inference_eval" / "ankh3_profile_only-metrics.jsonl") as f:
        (line,) = f.read().splitlines()
    metrics = json.loads(line)
    assert metrics["step"] == 0 and metrics["profile/residues"] == residues
    np.testing.assert_allclose(metrics["profile/kl_per_residue"], kl / residues, rtol=1e-4)
    # Near-ties may break either way between the two computations: at most one residue.
    assert abs(metrics["profile/argmax_agreement"] - agree / residues) <= 1.5 / residues
