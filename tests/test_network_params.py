"""Parameter counts of the model configs against the published sizes, and the FLOPs formula.

Counts come from shape evaluation (models/param_count.py): no model is ever allocated.
"""

import pathlib

import pytest

pytest.importorskip(
    "t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from models import network  # noqa: E402
from models import param_count  # noqa: E402


@pytest.fixture(scope="module")
def counts():
    """ParameterCounts and Ankh3Config of every model config in gin/models/, by file stem."""
    result = {}
    for gin_file in param_count.model_gin_files():
        config = param_count.network_config_from_gin(gin_file)
        name = pathlib.Path(gin_file).stem
        result[name] = (config, param_count.count_parameters(config))
    return result


def test_every_model_config_is_counted(counts):
    assert set(counts) == {"ankh3_large", "ankh3_xl", "ankh_base", "ankh_large", "small", "tiny"}


def test_ankh_large_encoder_matches_the_published_1_15_billion(counts):
    config, count = counts["ankh_large"]
    assert config.mlp_activations == ("gelu", "linear") and config.vocab_size == 144
    # The 144 x 1536 embedding is 0.02 % of the encoder: 1.15 B holds with or without it.
    assert count.encoder == pytest.approx(1.15e9, rel=0.01)
    assert count.encoder_with_embedding == pytest.approx(1.15e9, rel=0.01)
    # "~1.9 B with the decoder".
    assert count.total == pytest.approx(1.9e9, rel=0.02)


def test_ankh3_xl_encoder_matches_the_published_3_49_billion(counts):
    config, count = counts["ankh3_xl"]
    assert (config.emb_dim, config.num_heads, config.num_encoder_layers) == (2560, 32, 48)
    assert count.encoder_with_embedding == pytest.approx(3.49e9, rel=0.005)


def test_ankh3_large_and_ankh_base_sizes(counts):
    assert counts["ankh3_large"][1].encoder_with_embedding == pytest.approx(1.15e9, rel=0.01)
    assert counts["ankh_base"][1].encoder_with_embedding == pytest.approx(0.453e9, rel=0.01)


def test_structure_untied_projection_and_64_relative_buckets(counts):
    for name, (config, count) in counts.items():
        assert count.relpos_table_shape == (config.num_heads, 64), name
        # Untied: a separate vocab x emb_dim output projection next to the embedding.
        assert count.logits == count.embedding == config.vocab_size * config.emb_dim, name
        assert count.total == count.embedding + count.encoder + count.decoder + count.logits


def test_counts_by_shape_evaluation_allocate_nothing(counts):
    config, _ = counts["ankh3_xl"]
    shapes = param_count.parameter_shapes(config)
    leaves = jax.tree_util.tree_leaves(shapes)
    assert leaves and all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype("float32")}


def test_count_matches_the_closed_form_for_a_gated_t5_encoder():
    config = network.Ankh3Config(vocab_size=256, emb_dim=48, num_heads=3, head_dim=8,
                                 num_encoder_layers=3, num_decoder_layers=2, mlp_dim=80,
                                 relative_attention_num_buckets=16,
                                 relative_attention_max_distance=32)
    count = param_count.count_parameters(config)
    inner = 3 * 8
    encoder_layer = 4 * 48 * inner + 3 * 48 * 80 + 2 * 48
    decoder_layer = 8 * 48 * inner + 3 * 48 * 80 + 3 * 48
    assert count.encoder == 3 * encoder_layer + 48 + 3 * 16
    assert count.decoder == 2 * decoder_layer + 48 + 3 * 16
    assert count.relpos_table_shape == (3, 16)


def test_forward_flops_formula_agrees_with_xla():
    """The closed form of `forward_flops` against XLA's count of the compiled forward pass."""
    config = network.Ankh3Config(vocab_size=256, emb_dim=256, num_heads=4, head_dim=64,
                                 num_encoder_layers=2, num_decoder_layers=2, mlp_dim=640,
                                 dtype="float32")
    batch, inputs_length, targets_length = 2, 64, 32
    module = network.Ankh3Transformer(config)
    encoder_input = jnp.ones((batch, inputs_length), jnp.int32)
    decoder_input = jnp.ones((batch, targets_length), jnp.int32)
    params = param_count.parameter_shapes(config)

    def forward(params, encoder_input, decoder_input):
        return module.apply({"params": params}, encoder_input, decoder_input, decoder_input,
                            enable_dropout=False)

    cost = jax.jit(forward).lower(params, encoder_input, decoder_input).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    per_example = param_count.forward_flops(config, inputs_length, targets_length)["per_example"]
    formula = batch * per_example
    # What the formula leaves out on purpose (its docstring): t5x's one-hot embedding lookup and
    # the relative-position bias contraction of each stack.
    tokens = batch * (inputs_length + targets_length)
    one_hot_lookup = tokens * 2 * config.vocab_size * config.emb_dim
    position_bias = batch * 2 * config.num_heads * 64 * (inputs_length ** 2 + targets_length ** 2)
    assert formula + one_hot_lookup + position_bias == pytest.approx(cost["flops"], rel=0.02)


def test_sizing_is_three_forward_passes_over_the_slice(counts):
    config, count = counts["ankh3_large"]
    sizing = param_count.size_training_run(config, 512, 512, 1024, chips=128,
                                           peak_flops_per_chip=275e12, mfu=0.5)
    forward = param_count.forward_flops(config, 512, 512)
    assert sizing["train_flops_per_example"] == 3 * forward["per_example"]
    delivered = 128 * 275e12 * 0.5
    assert sizing["step_seconds"] == pytest.approx(1024 * 3 * forward["per_example"] / delivered)
    # About 6 x parameters per token, plus attention: the encoder token cost is 6 x the encoder's
    # matrix parameters (and the decoder's cross-attention key/value projections) within 15 %.
    assert sizing["train_flops_per_encoder_token"] == pytest.approx(6 * count.encoder, rel=0.15)
    assert sizing["epoch_steps_packed"] == pytest.approx(17e9 / (1024 * 512))


def test_command_line_prints_every_config(capsys):
    param_count.main(["gin/models/tiny.gin", "gin/models/ankh3_large.gin", "--flops"])
    out = capsys.readouterr().out
    assert "ankh3_large" in out and "tiny" in out
    assert "1,151,879,680" in out  # Ankh3-Large encoder with embedding
    assert "16x64" in out
    assert "one epoch" in out
