"""Does the Hugging Face model compute what our network computes? Side by side on the same ids.

`compare` runs the network (JAX, float32) and the `transformers` model (torch, float32) on the
same token ids and returns the largest differences of the encoder outputs and of the decoder
logits, and the greedy decodes of both: ours through t5x's own decoding (cached,
`decoding.temperature_sample` with top-1), theirs through `generate`. The tests assert on it; for
an export of a large model, run it by hand (docs/huggingface.md).
"""
import dataclasses
from typing import Mapping, Sequence

import numpy as np

from models import network
from tasks import vocabulary

DEFAULT_PROMPTS = ("[S2S]MKAYVL", "[NLU]M<extra_id_0>AY<extra_id_1>LI<extra_id_2>SRG<extra_id_3>")


def _pad(rows: Sequence[Sequence[int]], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def _until_eos(row: Sequence[int]) -> list[int]:
    row = [int(t) for t in row]
    return row[:row.index(vocabulary.ProteinVocabulary().eos_id) + 1] \
        if vocabulary.ProteinVocabulary().eos_id in row else row


def t5x_greedy(config: network.Ankh3Config, params: Mapping, encoder_ids: np.ndarray,
               max_length: int) -> list[list[int]]:
    """Greedy decodes (up to and including `</s>`) by t5x's EncoderDecoderModel.predict_batch."""
    from t5x import decoding
    from t5x import models

    pv = vocabulary.ProteinVocabulary()
    model = models.EncoderDecoderModel(
        network.Ankh3Transformer(config), pv, pv, optimizer_def=None,
        decode_fn=decoding.temperature_sample)
    batch = {"encoder_input_tokens": encoder_ids,
             "decoder_input_tokens": np.zeros((len(encoder_ids), max_length), np.int32)}
    decodes, _ = model.predict_batch_with_aux(params, batch, decoder_params={"topk": 1})
    return [_until_eos(row) for row in np.asarray(decodes)]


def compare(config: network.Ankh3Config, params: Mapping, hf_dir: str,
            prompts: Sequence[str] = DEFAULT_PROMPTS, max_new_tokens: int = 16,
            generate: bool = True) -> dict:
    """Max abs differences (encoder outputs, decoder logits) and both greedy decodes.

    Returns {"encoder_max_abs_diff", "logits_max_abs_diff", "ours", "theirs"}; the decodes are
    token-id lists without the decoder start id, each up to and including `</s>` (None without
    `generate`, which saves compiling t5x's decoding loop).
    """
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    config = dataclasses.replace(config, dtype="float32", dropout_rate=0.0)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = T5ForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    encoded = tokenizer(list(prompts), return_tensors="pt", padding=True)
    encoder_ids = encoded.input_ids.numpy().astype(np.int32)
    # Teacher-forced decoder inputs: the start id, then a few residues (any ids would do).
    residues = vocabulary.ProteinVocabulary().encode("MKAYVLGSHW")
    decoder_ids = _pad([[0] + residues[:4 + 2 * i] for i in range(len(prompts))],
                       4 + 2 * len(prompts))
    decoder_mask = np.zeros_like(decoder_ids)
    for i in range(len(prompts)):
        decoder_mask[i, :5 + 2 * i] = 1

    module = network.Ankh3Transformer(config)
    variables = {"params": params}
    ours_encoded = np.asarray(module.apply(variables, encoder_ids, enable_dropout=False,
                                           method=network.Ankh3Transformer.encode))
    ours_logits = np.asarray(module.apply(variables, encoder_ids, decoder_ids, decoder_mask,
                                          enable_dropout=False))
    with torch.no_grad():
        theirs = model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask,
                       decoder_input_ids=torch.from_numpy(decoder_ids.astype(np.int64)),
                       decoder_attention_mask=torch.from_numpy(decoder_mask.astype(np.int64)))
        generated = model.generate(input_ids=encoded.input_ids,
                                   attention_mask=encoded.attention_mask,
                                   max_new_tokens=max_new_tokens, do_sample=False,
                                   num_beams=1) if generate else None
    real = encoder_ids > 0
    targets = decoder_mask > 0
    return {
        "encoder_max_abs_diff": float(np.abs(
            ours_encoded - theirs.encoder_last_hidden_state.numpy())[real].max()),
        "logits_max_abs_diff": float(np.abs(ours_logits - theirs.logits.numpy())[targets].max()),
        "ours": t5x_greedy(config, params, encoder_ids, max_new_tokens) if generate else None,
        "theirs": [_until_eos(row[1:]) for row in generated.numpy()] if generate else None,
    }
