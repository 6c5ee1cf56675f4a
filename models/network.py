"""The Ankh3 encoder-decoder Transformer in Flax, a drop-in module for t5x.

Architecture (T5 v1.1 style, as in the released Ankh / Ankh2 / Ankh3 checkpoints): pre-norm RMS
layer norm, gated MLP (gated-SiLU for Ankh2/Ankh3, gated-GELU for Ankh v1), T5 relative position
biases shared by all layers of a stack, one input embedding shared by encoder and decoder, and an
output projection that is NOT tied to it. Unlike t5x's example network, the relative-position
bucket count and maximum distance are configuration values (Ankh: 64 buckets / 128; t5x hard-codes
32 / 128).

The building blocks (attention, dense, embedding, RMS norm, MLP, masks) are t5x's
`t5x.examples.t5.layers`, so parameters carry t5x's logical axis names ('embed', 'mlp', 'heads',
'joined_kv', 'vocab', 'relpos_buckets') and partition with t5x's
`partitioning.standard_logical_axis_rules`. Those layers create every parameter in float32;
`Ankh3Config.dtype` sets the activation dtype.
"""

import dataclasses
from typing import Any, Optional, Sequence

from flax import linen as nn
import jax.numpy as jnp
from t5x.examples.t5 import layers


@dataclasses.dataclass(frozen=True)
class Ankh3Config:
    """Hyperparameters of the network (bind them with gin, see `gin/models/*.gin`).

    Attributes:
        vocab_size: number of token ids (256 for Ankh3, 144 for Ankh v1 / Ankh2).
        emb_dim: model width (d_model).
        num_heads: attention heads per attention block.
        num_encoder_layers: encoder blocks.
        num_decoder_layers: decoder blocks.
        head_dim: width of one attention head (d_kv); heads * head_dim need not equal emb_dim.
        mlp_dim: inner width of the MLP (d_ff).
        dtype: activation dtype; parameters are always float32.
        mlp_activations: one activation per MLP input projection, multiplied together:
            ('silu', 'linear') is gated-SiLU (Ankh2/Ankh3), ('gelu', 'linear') gated-GELU (Ankh v1).
        dropout_rate: dropout on embeddings, residual branches, MLP and attention weights (Ankh: 0).
        logits_via_embedding: tie the output projection to the input embedding (Ankh: untied).
        relative_attention_num_buckets: relative-position buckets per direction pair (Ankh: 64).
        relative_attention_max_distance: distance from which all positions share the last bucket.
        float32_attention_logits: compute attention logits and softmax in float32.
    """

    vocab_size: int
    emb_dim: int
    num_heads: int
    num_encoder_layers: int
    num_decoder_layers: int
    head_dim: int
    mlp_dim: int
    dtype: Any = "bfloat16"
    mlp_activations: Sequence[str] = ("silu", "linear")
    dropout_rate: float = 0.0
    logits_via_embedding: bool = False
    relative_attention_num_buckets: int = 64
    relative_attention_max_distance: int = 128
    float32_attention_logits: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers",
                     "num_decoder_layers", "head_dim", "mlp_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Ankh3Config.{name} must be a positive integer, got {value!r}")
        # A tuple keeps the config hashable, which Flax needs of module attributes.
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        if not self.mlp_activations:
            raise ValueError("Ankh3Config.mlp_activations must name at least one activation")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(
                f"Ankh3Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        buckets = self.relative_attention_num_buckets
        # Bidirectional (encoder) attention splits the buckets by direction and then keeps half of
        # each direction for exact offsets; the rest are log-spaced up to max_distance. Fewer than 4
        # buckets leaves no exact bucket, and max_distance <= buckets // 2 makes the log scale
        # degenerate in the (unidirectional) decoder.
        if buckets < 4 or buckets % 2:
            raise ValueError("Ankh3Config.relative_attention_num_buckets must be an even "
                             f"number >= 4, got {buckets!r}")
        if self.relative_attention_max_distance <= buckets // 2:
            raise ValueError(
                "Ankh3Config.relative_attention_max_distance must exceed "
                f"relative_attention_num_buckets // 2 ({buckets // 2}), "
                f"got {self.relative_attention_max_distance!r}")


def _relative_position_biases(config: Ankh3Config) -> layers.RelativePositionBiases:
    """The bias table of one stack: float32 parameter of shape (num_heads, num_buckets)."""
    return layers.RelativePositionBiases(
        num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance,
        num_heads=config.num_heads,
        dtype=config.dtype,
        embedding_init=nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
        name="relpos_bias",
    )


def _attention(config: Ankh3Config, name: str) -> layers.MultiHeadDotProductAttention:
    return layers.MultiHeadDotProductAttention(
        num_heads=config.num_heads,
        head_dim=config.head_dim,
        dtype=config.dtype,
        dropout_rate=config.dropout_rate,
        float32_logits=config.float32_attention_logits,
        name=name,
    )


def _mlp(config: Ankh3Config) -> layers.MlpBlock:
    return layers.MlpBlock(
        intermediate_dim=config.mlp_dim,
        activations=config.mlp_activations,
        intermediate_dropout_rate=config.dropout_rate,
        dtype=config.dtype,
        name="mlp",
    )


def _dropout(config: Ankh3Config) -> nn.Dropout:
    # Same mask for every position of a sequence, as in T5.
    return nn.Dropout(rate=config.dropout_rate, broadcast_dims=(-2,))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention block followed by a pre-norm MLP block, each with a residual."""

    config: Ankh3Config

    @nn.compact
    def __call__(self, x, mask, position_bias, deterministic: bool):
        """[batch, length, emb_dim] -> [batch, length, emb_dim]."""
        cfg = self.config
        h = layers.LayerNorm(dtype=cfg.dtype, name="pre_attention_layer_norm")(x)
        h = _attention(cfg, "attention")(h, h, mask, position_bias, deterministic=deterministic)
        x = x + _dropout(cfg)(h, deterministic=deterministic)

        h = layers.LayerNorm(dtype=cfg.dtype, name="pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, deterministic=deterministic)
        return x + _dropout(cfg)(h, deterministic=deterministic)


class DecoderLayer(nn.Module):
    """Causal self-attention, attention to the encoder output, then MLP; all pre-norm, residual."""

    config: Ankh3Config

    @nn.compact
    def __call__(self, y, encoded, self_mask, cross_mask, position_bias, deterministic: bool,
                 decode: bool):
        """[batch, length, emb_dim] -> same; `decode` reads and extends the autoregressive cache."""
        cfg = self.config
        h = layers.LayerNorm(dtype=cfg.dtype, name="pre_self_attention_layer_norm")(y)
        h = _attention(cfg, "self_attention")(
            h, h, self_mask, position_bias, deterministic=deterministic, decode=decode)
        y = y + _dropout(cfg)(h, deterministic=deterministic)

        h = layers.LayerNorm(dtype=cfg.dtype, name="pre_cross_attention_layer_norm")(y)
        h = _attention(cfg, "encoder_decoder_attention")(
            h, encoded, cross_mask, deterministic=deterministic)
        y = y + _dropout(cfg)(h, deterministic=deterministic)

        h = layers.LayerNorm(dtype=cfg.dtype, name="pre_mlp_layer_norm")(y)
        h = _mlp(cfg)(h, deterministic=deterministic)
        return y + _dropout(cfg)(h, deterministic=deterministic)


class Encoder(nn.Module):
    """Token embedding, `num_encoder_layers` encoder layers, final RMS norm."""

    config: Ankh3Config
    token_embedder: nn.Module

    @nn.compact
    def __call__(self, tokens, mask, deterministic: bool):
        """[batch, length] int tokens -> [batch, length, emb_dim] encodings."""
        cfg = self.config
        length = tokens.shape[-1]
        # One bias tensor [1, heads, length, length] for the whole stack (the table is shared by all
        # layers, as in T5), computed once rather than once per layer.
        position_bias = _relative_position_biases(cfg)(length, length, True)

        x = self.token_embedder(tokens.astype("int32"))
        x = _dropout(cfg)(x, deterministic=deterministic).astype(cfg.dtype)
        for index in range(cfg.num_encoder_layers):
            x = EncoderLayer(cfg, name=f"layers_{index}")(x, mask, position_bias, deterministic)
        x = layers.LayerNorm(dtype=cfg.dtype, name="encoder_norm")(x)
        return _dropout(cfg)(x, deterministic=deterministic)


class Decoder(nn.Module):
    """Token embedding, `num_decoder_layers` decoder layers, final RMS norm, output projection."""

    config: Ankh3Config
    token_embedder: nn.Module

    @nn.compact
    def __call__(self, encoded, tokens, self_mask, cross_mask, deterministic: bool, decode: bool,
                 max_decode_length: Optional[int]):
        """[batch, length] int tokens (and encodings) -> [batch, length, vocab] float32 logits."""
        cfg = self.config
        # While decoding one token at a time the attention layer slices the row of the current
        # position out of the full [max_decode_length, max_decode_length] bias.
        length = max_decode_length if decode and max_decode_length else tokens.shape[-1]
        position_bias = _relative_position_biases(cfg)(length, length, False)

        y = self.token_embedder(tokens.astype("int32"))
        y = _dropout(cfg)(y, deterministic=deterministic).astype(cfg.dtype)
        for index in range(cfg.num_decoder_layers):
            y = DecoderLayer(cfg, name=f"layers_{index}")(
                y, encoded, self_mask, cross_mask, position_bias, deterministic, decode)
        y = layers.LayerNorm(dtype=cfg.dtype, name="decoder_norm")(y)
        y = _dropout(cfg)(y, deterministic=deterministic)

        if cfg.logits_via_embedding:
            # Tied projection: rescale so that logits have unit-scale variance at initialisation.
            return self.token_embedder.attend(y) / jnp.sqrt(y.shape[-1])
        # Float32 projection for a numerically stable softmax cross-entropy.
        return layers.DenseGeneral(cfg.vocab_size, dtype=jnp.float32,
                                   kernel_axes=("embed", "vocab"), name="logits_dense")(y)


class Ankh3Transformer(nn.Module):
    """Encoder-decoder Transformer with the call signature t5x's `EncoderDecoderModel` expects.

    `__call__` runs encoder and decoder (training, scoring); `encode` and `decode` are the two
    halves t5x's decoding (`predict_batch`) calls separately. Absolute positions (`*_positions`) are
    accepted for that interface but unused: positions enter only as relative biases, which packing
    does not change because attention across packed segments is masked.
    """

    config: Ankh3Config

    def setup(self):
        cfg = self.config
        # One embedding for encoder and decoder inputs; one-hot lookup partitions well under pjit.
        self.token_embedder = layers.Embed(
            num_embeddings=cfg.vocab_size,
            features=cfg.emb_dim,
            dtype=cfg.dtype,
            attend_dtype=jnp.float32,
            embedding_init=nn.initializers.normal(stddev=1.0),
            one_hot=True,
            name="token_embedder",
        )
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, enable_dropout: bool = True):
        """[batch, length] tokens (0 = padding) -> [batch, length, emb_dim] encodings."""
        cfg = self.config
        if encoder_input_tokens.ndim != 2:
            raise ValueError("encoder_input_tokens must be [batch, length], "
                             f"got shape {encoder_input_tokens.shape}")
        not_padding = encoder_input_tokens > 0
        mask = layers.make_attention_mask(not_padding, not_padding, dtype=cfg.dtype)
        if encoder_segment_ids is not None:
            same_segment = layers.make_attention_mask(
                encoder_segment_ids, encoder_segment_ids, jnp.equal, dtype=cfg.dtype)
            mask = layers.combine_masks(mask, same_segment)
        return self.encoder(encoder_input_tokens, mask, deterministic=not enable_dropout)

    def decode(self, encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
               encoder_segment_ids=None, decoder_segment_ids=None, decoder_positions=None,
               enable_dropout: bool = True, decode: bool = False,
               max_decode_length: Optional[int] = None):
        """Decoder logits [batch, target_length, vocab_size] given the encodings.

        `encoder_input_tokens` only supplies the encoder padding mask. With `decode=True` the
        decoder reads and extends the 'cache' collection one position at a time (t5x's decoding);
        packed inputs are not allowed then.
        """
        del decoder_positions  # relative position biases only
        cfg = self.config
        encoder_not_padding = encoder_input_tokens > 0
        if decode:
            if encoder_segment_ids is not None:
                raise ValueError(
                    "Packed inputs (encoder_segment_ids) cannot be used with decode=True")
            # The cached self-attention applies its own causal mask; target padding is unknown here.
            self_mask = None
            cross_mask = layers.make_attention_mask(
                jnp.ones_like(decoder_target_tokens), encoder_not_padding, dtype=cfg.dtype)
        else:
            self_mask = layers.make_decoder_mask(
                decoder_target_tokens=decoder_target_tokens, dtype=cfg.dtype,
                decoder_segment_ids=decoder_segment_ids)
            cross_mask = layers.make_attention_mask(
                decoder_target_tokens > 0, encoder_not_padding, dtype=cfg.dtype)
            if encoder_segment_ids is not None:
                same_segment = layers.make_attention_mask(
                    decoder_segment_ids, encoder_segment_ids, jnp.equal, dtype=cfg.dtype)
                cross_mask = layers.combine_masks(cross_mask, same_segment)
        return self.decoder(encoded, decoder_input_tokens, self_mask, cross_mask,
                            deterministic=not enable_dropout, decode=decode,
                            max_decode_length=max_decode_length)

    def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                 encoder_segment_ids=None, decoder_segment_ids=None, encoder_positions=None,
                 decoder_positions=None, *, enable_dropout: bool = True, decode: bool = False):
        """Logits [batch, target_length, vocab_size] for teacher-forced decoder inputs.

        `decoder_input_tokens` are the targets shifted right (t5x's feature converter makes them);
        `decoder_target_tokens` supply the decoder padding mask.
        """
        del encoder_positions  # relative position biases only
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids=encoder_segment_ids,
                              enable_dropout=enable_dropout)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           decoder_target_tokens, encoder_segment_ids=encoder_segment_ids,
                           decoder_segment_ids=decoder_segment_ids,
                           decoder_positions=decoder_positions, enable_dropout=enable_dropout,
                           decode=decode)
