"""Behaviour of the Ankh3 network (models/network.py) and its use by t5x's EncoderDecoderModel."""

import dataclasses
import functools

import numpy as np
import pytest

pytest.importorskip(
    "t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")

import gin  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax.linen import partitioning as flax_partitioning  # noqa: E402
from t5x import decoding  # noqa: E402
from t5x import models as t5x_models  # noqa: E402
from t5x import partitioning  # noqa: E402
from t5x.examples.t5 import network as t5x_network  # noqa: E402

from models import network  # noqa: E402
from models import param_count  # noqa: E402

TINY_GIN = "gin/models/tiny.gin"
EOS = 1
# Residue ids of the Ankh3 vocabulary (tasks/vocabulary.py): L=7 ... W=26.
FIRST_RESIDUE, LAST_RESIDUE = 7, 26


def _small_config(**overrides) -> network.Ankh3Config:
    dims = dict(vocab_size=256, emb_dim=32, num_heads=4, head_dim=8, num_encoder_layers=2,
                num_decoder_layers=2, mlp_dim=64, dtype="float32")
    dims.update(overrides)
    return network.Ankh3Config(**dims)


def _tokens(rng: np.random.Generator, lengths, width: int) -> np.ndarray:
    """[batch, width] residue ids, each row `length` residues then EOS then padding."""
    rows = np.zeros((len(lengths), width), np.int32)
    for row, length in zip(rows, lengths):
        row[:length] = rng.integers(FIRST_RESIDUE, LAST_RESIDUE + 1, size=length)
        row[length] = EOS
    return rows


def _teacher_forced_batch(seed: int = 0, input_width: int = 40, target_width: int = 24):
    rng = np.random.default_rng(seed)
    encoder_input = _tokens(rng, [37, 20], input_width)
    target = _tokens(rng, [21, 9], target_width)
    decoder_input = np.zeros_like(target)
    decoder_input[:, 1:] = target[:, :-1]  # shifted right, decoder start token 0
    return jnp.asarray(encoder_input), jnp.asarray(decoder_input), jnp.asarray(target)


def _init(config: network.Ankh3Config, seed: int = 0):
    return network.Ankh3Transformer(config).init(
        jax.random.PRNGKey(seed), *_teacher_forced_batch(), enable_dropout=False)


def _init_shapes(config: network.Ankh3Config):
    """Parameter shapes and dtypes of `config`'s network, without computing any weight."""
    return jax.eval_shape(lambda: _init(config))["params"]


@pytest.fixture(scope="module")
def small_params():
    """Initial parameters of `_small_config()`; every variant with the same shapes reuses them."""
    return _init(_small_config())["params"]


def _logits(config: network.Ankh3Config, params, **kwargs):
    return network.Ankh3Transformer(config).apply(
        {"params": params}, *_teacher_forced_batch(), **kwargs)


def _model_from_gin(gin_file: str):
    """t5x's EncoderDecoderModel of a model gin, after `gin.finalize()` as t5x's scripts do."""
    gin.clear_config()
    gin.add_config_file_search_path(str(param_count.REPO_ROOT))
    try:
        gin.parse_config_file(gin_file)
        gin.finalize()
        return gin.get_configurable(t5x_models.EncoderDecoderModel)()
    finally:
        gin.clear_config()


@pytest.fixture(scope="module")
def tiny_model():
    """t5x's EncoderDecoderModel as gin/models/tiny.gin binds it, with initial parameters."""
    model = _model_from_gin(TINY_GIN)
    shapes = {"encoder_input_tokens": (2, 40), "decoder_input_tokens": (2, 24)}
    types = {name: jnp.int32 for name in shapes}
    variables = model.get_initial_variables(jax.random.PRNGKey(0), shapes, types)
    return model, variables


def test_tiny_model_forward_pass_shapes_and_dtypes(tiny_model):
    model, variables = tiny_model
    config = model.module.config
    assert isinstance(model.module, network.Ankh3Transformer)
    assert (config.emb_dim, config.num_encoder_layers, config.num_decoder_layers) == (64, 2, 2)
    encoder_input, decoder_input, target = _teacher_forced_batch()
    logits = _logits(config, variables["params"], enable_dropout=False)
    assert logits.shape == (2, 24, 256)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    # Untied: the output projection is its own parameter next to the input embedding.
    params = variables["params"]
    assert params["decoder"]["logits_dense"]["kernel"].shape == (64, 256)
    assert params["token_embedder"]["embedding"].shape == (256, 64)


def test_tiny_model_loss_through_t5x(tiny_model):
    model, variables = tiny_model
    encoder_input, decoder_input, target = _teacher_forced_batch()
    batch = {"encoder_input_tokens": encoder_input, "decoder_input_tokens": decoder_input,
             "decoder_target_tokens": target,
             "decoder_loss_weights": (target > 0).astype(jnp.float32)}
    loss, _ = model.loss_fn(variables["params"], batch, dropout_rng=None)
    # Untrained, the prediction is close to uniform over the 256 ids: cross-entropy near log(256).
    assert np.isfinite(loss)
    per_token = float(loss) / float(batch["decoder_loss_weights"].sum())
    assert abs(per_token - np.log(256)) < 1.5


def test_matches_t5x_example_network_with_its_32_buckets():
    """With t5x's 32 buckets / 128, the network computes what t5x's example network computes."""
    config = _small_config(relative_attention_num_buckets=32, mlp_activations=("silu", "linear"))
    reference = t5x_network.Transformer(t5x_network.T5Config(
        vocab_size=256, dtype="float32", emb_dim=32, num_heads=4, head_dim=8, num_encoder_layers=2,
        num_decoder_layers=2, mlp_dim=64, mlp_activations=("silu", "linear"), dropout_rate=0.0))
    reference_variables = reference.init(jax.random.PRNGKey(3), *_teacher_forced_batch(),
                                         enable_dropout=False)
    # Same parameter names and shapes: checkpoints and partitioning rules carry over.
    own_shapes = jax.tree_util.tree_map(lambda x: x.shape, _init_shapes(config))
    assert own_shapes == jax.tree_util.tree_map(lambda x: x.shape, reference_variables["params"])
    expected = reference.apply({"params": reference_variables["params"]}, *_teacher_forced_batch(),
                               enable_dropout=False)
    actual = _logits(config, reference_variables["params"], enable_dropout=False)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_bucket_count_sets_the_relative_bias_table():
    for buckets in (32, 64):
        params = _init_shapes(_small_config(relative_attention_num_buckets=buckets))
        assert params["encoder"]["relpos_bias"]["rel_embedding"].shape == (4, buckets)
        assert params["decoder"]["relpos_bias"]["rel_embedding"].shape == (4, buckets)


@pytest.mark.parametrize("num_buckets, max_distance, bidirectional", [
    (64, 128, True), (32, 128, True), (64, 128, False), (64, 64, True)])
def test_bucket_count_and_max_distance_set_the_position_buckets(num_buckets, max_distance,
                                                               bidirectional):
    # A table whose entry for bucket b is b turns the bias into the bucket of each (q, k) pair.
    config = _small_config(relative_attention_num_buckets=num_buckets,
                           relative_attention_max_distance=max_distance)
    biases = network._relative_position_biases(config)
    table = jnp.tile(jnp.arange(num_buckets, dtype=jnp.float32), (4, 1))
    bias = biases.apply({"params": {"rel_embedding": table}}, 300, 300, bidirectional)
    buckets = np.asarray(bias[0, 0])
    assert buckets.max() == num_buckets - 1
    # Looking back from the last query: one bucket per distance up to `exact`, then log-spaced
    # buckets that all end in the last one shortly before max_distance.
    by_distance = buckets[299, ::-1]
    exact = num_buckets // 4 if bidirectional else num_buckets // 2
    np.testing.assert_array_equal(by_distance[:exact], np.arange(exact))
    first_in_last_bucket = int(np.argmax(by_distance == by_distance[-1]))
    assert max_distance // 2 < first_in_last_bucket <= max_distance
    if bidirectional:  # looking ahead uses the other half of the buckets
        assert set(np.unique(buckets[0, 1:])) == set(range(num_buckets // 2 + 1, num_buckets))


def test_max_distance_changes_the_outputs(small_params):
    near = _logits(_small_config(relative_attention_max_distance=128), small_params,
                   enable_dropout=False)
    far = _logits(_small_config(relative_attention_max_distance=40), small_params,
                  enable_dropout=False)
    assert not np.allclose(near, far, atol=1e-4)


def test_gated_silu_and_gated_gelu_differ(small_params):
    params = small_params
    silu = _logits(_small_config(mlp_activations=("silu", "linear")), params, enable_dropout=False)
    gelu = _logits(_small_config(mlp_activations=("gelu", "linear")), params, enable_dropout=False)
    again = _logits(_small_config(mlp_activations=("silu", "linear")), params, enable_dropout=False)
    np.testing.assert_array_equal(silu, again)
    assert not np.allclose(silu, gelu, atol=1e-4)
    # Both are gated: two input projections per MLP.
    assert set(params["encoder"]["layers_0"]["mlp"]) == {"wi_0", "wi_1", "wo"}


def test_bfloat16_activations_with_float32_parameters(small_params):
    config = _small_config(dtype="bfloat16")
    dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(_init_shapes(config))}
    assert dtypes == {jnp.dtype("float32")}
    logits, state = network.Ankh3Transformer(config).apply(
        {"params": small_params}, *_teacher_forced_batch(), enable_dropout=False,
        capture_intermediates=True)
    intermediates = state["intermediates"]
    assert intermediates["encoder"]["layers_0"]["mlp"]["__call__"][0].dtype == jnp.bfloat16
    assert intermediates["encoder"]["layers_0"]["attention"]["__call__"][0].dtype == jnp.bfloat16
    assert intermediates["decoder"]["layers_0"]["mlp"]["__call__"][0].dtype == jnp.bfloat16
    assert intermediates["encoder"]["__call__"][0].dtype == jnp.bfloat16
    assert logits.dtype == jnp.float32  # projection in float32 for the softmax


def test_default_config_is_the_ankh_structure():
    config = network.Ankh3Config(vocab_size=256, emb_dim=8, num_heads=2, head_dim=4,
                                 num_encoder_layers=1, num_decoder_layers=1, mlp_dim=16)
    assert config.dtype == "bfloat16"
    assert config.dropout_rate == 0.0
    assert config.mlp_activations == ("silu", "linear")
    assert config.logits_via_embedding is False
    assert config.relative_attention_num_buckets == 64
    assert config.relative_attention_max_distance == 128


def test_dropout_is_off_by_default_and_works_when_set(tiny_model):
    model, variables = tiny_model
    assert model.module.config.dropout_rate == 0.0
    rngs = {"dropout": jax.random.PRNGKey(7)}
    params = variables["params"]
    off = _logits(model.module.config, params, enable_dropout=False)
    default_on = _logits(model.module.config, params, enable_dropout=True, rngs=rngs)
    np.testing.assert_array_equal(off, default_on)
    with_dropout = dataclasses.replace(model.module.config, dropout_rate=0.3)
    dropped = _logits(with_dropout, params, enable_dropout=True, rngs=rngs)
    assert not np.allclose(off, dropped, atol=1e-4)


def test_tied_logits_use_the_embedding(small_params):
    assert "logits_dense" not in _init_shapes(_small_config(logits_via_embedding=True))["decoder"]
    params = {**small_params,
              "decoder": {k: v for k, v in small_params["decoder"].items() if k != "logits_dense"}}
    logits = _logits(_small_config(logits_via_embedding=True), params, enable_dropout=False)
    assert logits.shape == (2, 24, 256)


def test_packed_segments_do_not_see_each_other(small_params):
    config = _small_config()
    params = small_params
    module = network.Ankh3Transformer(config)
    rng = np.random.default_rng(5)
    first, second = _tokens(rng, [6], 7)[0], _tokens(rng, [11], 12)[0]
    packed = np.zeros((1, 24), np.int32)
    packed[0, :7], packed[0, 7:19] = first, second
    segments = np.zeros((1, 24), np.int32)
    segments[0, :7], segments[0, 7:19] = 1, 2
    alone = np.zeros((1, 24), np.int32)
    alone[0, :12] = second
    encoded_packed = module.apply({"params": params}, jnp.asarray(packed), jnp.asarray(segments),
                                  enable_dropout=False, method=module.encode)
    encoded_alone = module.apply({"params": params}, jnp.asarray(alone), enable_dropout=False,
                                 method=module.encode)
    # Relative positions inside a segment do not depend on where the segment starts.
    np.testing.assert_allclose(encoded_packed[0, 7:19], encoded_alone[0, :12], rtol=1e-5, atol=1e-5)
    encoded_unmasked = module.apply({"params": params}, jnp.asarray(packed), enable_dropout=False,
                                    method=module.encode)
    assert not np.allclose(encoded_unmasked[0, 7:19], encoded_alone[0, :12], atol=1e-4)


def test_parameters_carry_t5x_logical_axis_names(tiny_model):
    _, variables = tiny_model
    axis_names = flax_partitioning.get_axis_names(variables["params_axes"])
    params = variables["params"]
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        axis_names, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    known = {name for name, _ in partitioning.standard_logical_axis_rules()}
    used = {name for spec in jax.tree_util.tree_leaves(
        axis_names, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) for name in spec}
    assert used <= known
    assert {"embed", "mlp", "joined_kv", "vocab", "heads", "relpos_buckets"} <= used


def test_predict_batch_runs_with_the_configured_beam_search(tiny_model):
    model, variables = tiny_model
    encoder_input, _, _ = _teacher_forced_batch()
    batch = {"encoder_input_tokens": encoder_input,
             "decoder_input_tokens": jnp.zeros((2, 24), jnp.int32)}
    decoded = np.asarray(model.predict_batch(variables["params"], batch))
    assert decoded.shape == (2, 24)
    assert decoded.min() >= 0 and decoded.max() < 256


def test_greedy_decoding_predicts_what_teacher_forcing_predicts(tiny_model):
    """t5x's cached decoding (encode, then one decoder step at a time) matches a forward pass."""
    model, variables = tiny_model
    greedy = t5x_models.EncoderDecoderModel(
        module=model.module, input_vocabulary=model.input_vocabulary,
        output_vocabulary=model.output_vocabulary, optimizer_def=model.optimizer_def,
        decode_fn=functools.partial(decoding.temperature_sample, temperature=0.0))
    params = variables["params"]
    encoder_input, _, _ = _teacher_forced_batch()
    batch = {"encoder_input_tokens": encoder_input,
             "decoder_input_tokens": jnp.zeros((2, 24), jnp.int32)}
    decoded = np.asarray(greedy.predict_batch(params, batch))
    assert decoded.shape == (2, 24)

    decoder_input = np.zeros_like(decoded)
    decoder_input[:, 1:] = decoded[:, :-1]
    logits = model.module.apply({"params": params}, encoder_input, jnp.asarray(decoder_input),
                                jnp.ones_like(decoder_input), enable_dropout=False)
    predicted = np.asarray(jnp.argmax(logits, axis=-1))
    for row in range(2):
        length = list(decoded[row]).index(EOS) + 1 if EOS in decoded[row] else decoded.shape[1]
        assert length > 1
        np.testing.assert_array_equal(decoded[row, :length], predicted[row, :length])


@pytest.mark.parametrize("overrides, message", [
    (dict(relative_attention_num_buckets=33), "relative_attention_num_buckets"),
    (dict(relative_attention_num_buckets=2), "relative_attention_num_buckets"),
    (dict(relative_attention_num_buckets=64, relative_attention_max_distance=32), "max_distance"),
    (dict(dropout_rate=1.0), "dropout_rate"),
    (dict(mlp_activations=()), "mlp_activations"),
    (dict(num_heads=0), "num_heads"),
])
def test_invalid_config_is_rejected_with_the_field_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        _small_config(**overrides)


@pytest.mark.parametrize("gin_file", ["gin/models/ankh3_large.gin", "gin/models/ankh3_xl.gin"])
def test_ankh3_configs_build_the_t5x_model_with_the_protein_vocabulary(gin_file):
    model = _model_from_gin(gin_file)
    assert isinstance(model.module, network.Ankh3Transformer)
    assert model.module.config.dtype == "bfloat16"
    assert model.input_vocabulary.vocab_size == model.module.config.vocab_size == 256
    assert model.output_vocabulary == model.input_vocabulary


@pytest.mark.parametrize("gin_file", ["gin/models/ankh_base.gin", "gin/models/ankh_large.gin"])
def test_ankh_v1_configs_require_a_144_id_vocabulary(gin_file):
    # t5x's gin parsing finalizes the config, which rejects a macro left at %gin.REQUIRED.
    with pytest.raises(ValueError, match="VOCABULARY.*gin.REQUIRED"):
        _model_from_gin(gin_file)
