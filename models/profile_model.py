"""Profile prediction on the Ankh3 network: a profile head and its loss in a T5X model.

`ProfileAnkh3Transformer` is `network.Ankh3Transformer` with a head on the encoder's final
hidden states: one dense layer (float32) from emb_dim to 20 logits, one per amino acid in
HMMER's order ACDEFGHIKLMNPQRSTVWY, untied from the vocabulary. Its `__call__` still returns the
decoder logits alone (so t5x's scoring, decoding and inference work unchanged) and runs the head
only so that `init` creates its parameters; `logits_and_profile_logits` returns both.

`ProfileEncoderDecoderModel` (t5x's `EncoderDecoderModel`) trains with

    loss = decoder cross-entropy (summed over target tokens, as t5x sums it)
           + PROFILE_WEIGHT * sum over weighted positions of KL(profile || softmax(head))

so each weighted residue counts like one target token times the weight; examples without
profiles (weights 0) add nothing. Metrics, in `t5x.train`'s train summaries and in the
evaluation of its `train_eval_dataset_cfg`: `profile/kl_per_residue`, `profile/loss` (the
weighted term), `profile/argmax_agreement` (the profile's most likely residue is the head's) and
`profile/residues`.

In `t5x.eval` (gin/runs/profile_eval.gin) the same KL and agreement come from
`predict_batch_with_aux`: besides the decodes, its aux values hold each example's weighted sums
(`profile_kl`, `profile_agreement`, `profile_residues`), which the profile tasks' seqio metric
(`tasks.metrics.profile_metrics`) adds up over the split. One evaluation pass decodes (for the
joint form's masked-residue accuracy) and scores the profiles.

A plain Ankh3 checkpoint initialises this model: every parameter but the head has the same
name and shape, so restoring with `utils.RestoreCheckpointConfig.strict = False` takes them from
the checkpoint and leaves the head as initialised (gin/runs/profile_from_ankh3.gin).
"""
from typing import Optional

import clu.metrics as clu_metrics
import jax
import jax.numpy as jnp
from t5x import metrics as metrics_lib
from t5x import models
from t5x.examples.t5 import layers

from models import network
from tasks import profile_preprocessors

PROFILE_SIZE = profile_preprocessors.PROFILE_SIZE


class ProfileAnkh3Transformer(network.Ankh3Transformer):
    """The Ankh3 encoder-decoder with a profile head on the encoder (module docstring)."""

    def setup(self):
        super().setup()
        # Logical axes of the output projection ('vocab' for the 20 classes), so that t5x's
        # partitioning rules and Adafactor's factoring rules know them.
        self.profile_head = layers.DenseGeneral(
            PROFILE_SIZE, dtype=jnp.float32, kernel_axes=("embed", "vocab"),
            name="profile_head")

    def logits_and_profile_logits(self, encoder_input_tokens, decoder_input_tokens,
                                  decoder_target_tokens, encoder_segment_ids=None,
                                  decoder_segment_ids=None, encoder_positions=None,
                                  decoder_positions=None, *, enable_dropout: bool = True):
        """(decoder logits [batch, target_length, vocab], profile logits [batch, length, 20])."""
        del encoder_positions  # relative position biases only
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids=encoder_segment_ids,
                              enable_dropout=enable_dropout)
        logits = self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                             decoder_target_tokens, encoder_segment_ids=encoder_segment_ids,
                             decoder_segment_ids=decoder_segment_ids,
                             decoder_positions=decoder_positions, enable_dropout=enable_dropout)
        return logits, self.profile_head(encoded.astype(jnp.float32))

    def profile_logits(self, encoder_input_tokens, encoder_segment_ids=None, *,
                       enable_dropout: bool = True):
        """The profile head alone: [batch, length] tokens -> [batch, length, 20] logits."""
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids=encoder_segment_ids,
                              enable_dropout=enable_dropout)
        return self.profile_head(encoded.astype(jnp.float32))

    def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                 encoder_segment_ids=None, decoder_segment_ids=None, encoder_positions=None,
                 decoder_positions=None, *, enable_dropout: bool = True, decode: bool = False):
        if decode:
            return super().__call__(
                encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                encoder_segment_ids, decoder_segment_ids, encoder_positions, decoder_positions,
                enable_dropout=enable_dropout, decode=decode)
        logits, _ = self.logits_and_profile_logits(
            encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
            encoder_segment_ids, decoder_segment_ids, encoder_positions, decoder_positions,
            enable_dropout=enable_dropout)
        return logits


def profile_kl(profiles: jnp.ndarray, profile_logits: jnp.ndarray) -> jnp.ndarray:
    """KL(p || softmax(logits)) per position, [batch, length] (0 log 0 = 0)."""
    log_q = jax.nn.log_softmax(profile_logits.astype(jnp.float32), axis=-1)
    log_p = jnp.log(jnp.where(profiles > 0, profiles, 1.0))
    return jnp.sum(profiles * (log_p - log_q), axis=-1)


def profile_sums(profiles: jnp.ndarray, profile_logits: jnp.ndarray,
                 weights: jnp.ndarray) -> dict:
    """Per example [batch]: weighted KL, weighted argmax agreements, and the weight (residues)."""
    kl = profile_kl(profiles, profile_logits)
    agree = jnp.argmax(profiles, axis=-1) == jnp.argmax(profile_logits, axis=-1)
    return {"profile_kl": jnp.sum(kl * weights, axis=-1),
            "profile_agreement": jnp.sum(agree * weights, axis=-1),
            "profile_residues": jnp.sum(weights, axis=-1)}


def profile_metrics(profiles: jnp.ndarray, profile_logits: jnp.ndarray, weights: jnp.ndarray,
                    profile_loss: jnp.ndarray) -> dict:
    """The profile metrics of a batch (module docstring), from `profile_sums`."""
    sums = {name: jnp.sum(value) for name, value in
            profile_sums(profiles, profile_logits, weights).items()}
    residues = sums["profile_residues"]
    return {
        "profile/kl_per_residue": clu_metrics.Average(total=sums["profile_kl"], count=residues),
        "profile/argmax_agreement": clu_metrics.Average(total=sums["profile_agreement"],
                                                        count=residues),
        "profile/loss": metrics_lib.AveragePerStep(total=profile_loss),
        "profile/residues": metrics_lib.Sum(residues),
    }


class ProfileEncoderDecoderModel(models.EncoderDecoderModel):
    """t5x's EncoderDecoderModel with the profile loss (module docstring)."""

    FEATURE_CONVERTER_CLS = profile_preprocessors.ProfileEncDecFeatureConverter

    def __init__(self, *args, profile_weight: float = 1.0, **kwargs):
        if profile_weight < 0:
            raise ValueError("profile_weight must be >= 0, got %r" % profile_weight)
        self._profile_weight = profile_weight
        super().__init__(*args, **kwargs)

    def _compute_logits_and_profile_logits(self, params, batch,
                                           dropout_rng: Optional[jax.Array] = None):
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.module.apply(
            {"params": params},
            batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            enable_dropout=rngs is not None, rngs=rngs,
            method=self.module.logits_and_profile_logits)

    def predict_batch_with_aux(self, params, batch, rng=None, **kwargs):
        """t5x's decodes and aux values, plus each example's `profile_sums` (module docstring).
        `predict_batch` drops the aux values, and XLA the computation of them."""
        decodes, aux = super().predict_batch_with_aux(params, batch, rng, **kwargs)
        if "encoder_input_profiles" not in batch:  # e.g. prompts for inference
            return decodes, aux
        profile_logits = self.module.apply(
            {"params": params}, batch["encoder_input_tokens"],
            encoder_segment_ids=batch.get("encoder_segment_ids"), enable_dropout=False,
            method=self.module.profile_logits)
        sums = profile_sums(batch["encoder_input_profiles"].astype(jnp.float32), profile_logits,
                            batch["encoder_profile_weights"].astype(jnp.float32))
        return decodes, dict(aux, **sums)

    def loss_fn(self, params, batch, dropout_rng):
        """Decoder cross-entropy + PROFILE_WEIGHT * weighted KL, and the metrics of both."""
        logits, profile_logits = self._compute_logits_and_profile_logits(
            params, batch, dropout_rng)
        loss_normalizing_factor, weights = models.losses.get_loss_normalizing_factor_and_weights(
            self._loss_normalizing_factor, batch)
        loss, z_loss, _ = models.losses.compute_weighted_cross_entropy(
            logits, targets=batch["decoder_target_tokens"], weights=weights,
            label_smoothing=self._label_smoothing, z_loss=self._z_loss,
            loss_normalizing_factor=loss_normalizing_factor)
        profiles = batch["encoder_input_profiles"].astype(jnp.float32)
        profile_weights = batch["encoder_profile_weights"].astype(jnp.float32)
        profile_loss = self._profile_weight * jnp.sum(
            profile_kl(profiles, profile_logits) * profile_weights)
        segment_ids = {k: v != 0 for k, v in batch.items()
                       if k in ("encoder_input_tokens", "decoder_target_tokens")}
        metrics = self._compute_metrics(
            logits=logits, targets=batch["decoder_target_tokens"], mask=weights, loss=loss,
            z_loss=z_loss, segment_ids=segment_ids)
        metrics.update(profile_metrics(profiles, profile_logits, profile_weights, profile_loss))
        metrics["decoder_loss"] = metrics_lib.AveragePerStep(total=loss)
        total = loss + profile_loss
        metrics["loss"] = metrics_lib.AveragePerStep(total=total)
        return total, metrics
