"""Import a Hugging Face T5 checkpoint (e.g. a released Ankh3) as a t5x checkpoint to train on.

    python -m models.import_hf --hf_dir=DIR --output_dir=CKPT

DIR holds `config.json` and `model.safetensors` (or `pytorch_model.bin`, read with torch), as a
download of `ElnaggarLab/ankh3-large` or an export of `models.export_hf` does. CKPT receives:
- `checkpoint_0/`: a t5x checkpoint at step 0 with the imported parameters and fresh
  optimizer slots, which a run starts from with `--gin_file=gin/runs/from_checkpoint.gin
  --gin.INITIAL_CHECKPOINT_PATH="'CKPT/checkpoint_0'"`;
- `model.gin`: the model config to train it with: an `include` of the gin/models/ config with the
  same architecture when there is one (`ankh3_large.gin` for Ankh3-Large), otherwise the
  `network.Ankh3Config` bindings of this architecture over gin/models/encoder_decoder.gin.

An export of the profile model (config.json's `profile_head` entry and
`profile_head.safetensors`, models/hf_t5.py) comes back as the profile model: the checkpoint
holds the head too, and model.gin adds gin/models/profile.gin.

Configs the network cannot represent are refused with the reason (`hf_t5.network_config`): a
tied or rescaled output projection, an activation other than (gated) ReLU/GELU/SiLU, a
layer-norm epsilon other than 1e-6, weights whose shapes or names do not match the config.
"""
import argparse
import json
import os
from typing import Optional, Sequence

import numpy as np

from models import hf_t5
from models import network
from models import t5x_checkpoint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MODEL_GIN = "gin/models/encoder_decoder.gin"
PROFILE_MODEL_GIN = "gin/models/profile.gin"
PROFILE_HEAD = "profile_head"
# Fields that describe the architecture (the rest: activation dtype, dropout, are run choices).
_ARCHITECTURE_FIELDS = ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers",
                        "num_decoder_layers", "head_dim", "mlp_dim", "mlp_activations",
                        "logits_via_embedding", "relative_attention_num_buckets",
                        "relative_attention_max_distance")


def read_hf_state(hf_dir: str) -> dict[str, np.ndarray]:
    """All weights of an HF directory as float32 numpy arrays (safetensors, or torch .bin)."""
    safetensors_path = os.path.join(hf_dir, "model.safetensors")
    if os.path.exists(safetensors_path):
        from safetensors import safe_open

        state = {}
        # The torch framework reads bfloat16 too (numpy has no bfloat16 of its own).
        with safe_open(safetensors_path, framework="numpy") as f:
            for name in f.keys():
                state[name] = np.asarray(f.get_tensor(name), np.float32)
        return state
    bin_path = os.path.join(hf_dir, "pytorch_model.bin")
    if os.path.exists(bin_path):
        import torch

        return {name: value.float().numpy()
                for name, value in torch.load(bin_path, map_location="cpu").items()}
    raise FileNotFoundError("%s has neither model.safetensors nor pytorch_model.bin" % hf_dir)


def read_hf(hf_dir: str) -> tuple[network.Ankh3Config, dict]:
    """The network config and full parameter tree of an HF T5 directory."""
    config_path = os.path.join(hf_dir, "config.json")
    with open(config_path) as f:
        hf_config = json.load(f)
    try:
        config = hf_t5.network_config(hf_config)
    except hf_t5.UnsupportedConfigError as error:
        raise hf_t5.UnsupportedConfigError("%s: %s" % (config_path, error)) from None
    params = hf_t5.from_hf_state_dict(config, read_hf_state(hf_dir), source=hf_dir)
    profile_head = hf_t5.read_profile_head(hf_dir, hf_config, config)
    if profile_head is not None:
        params[PROFILE_HEAD] = profile_head
    return config, params


def matching_model_gin(config: network.Ankh3Config) -> Optional[str]:
    """The gin/models/ config (repository-relative) with this architecture, if there is one."""
    from models import param_count

    for path in param_count.model_gin_files():
        candidate = param_count.network_config_from_gin(path)
        if all(getattr(candidate, field) == getattr(config, field)
               for field in _ARCHITECTURE_FIELDS):
            return path
    return None


def model_gin_text(config: network.Ankh3Config, source: str,
                   profile_head: bool = False) -> str:
    """model.gin for the imported checkpoint (module docstring)."""
    matching = matching_model_gin(config)
    header = "# Model config of the checkpoint imported from %s by models.import_hf.\n" % source
    profile = ("# The profile model: the checkpoint holds its profile head.\ninclude '%s'\n"
               % PROFILE_MODEL_GIN if profile_head else "")
    if matching:
        return header + "include '%s'\n" % matching + profile
    lines = [header.rstrip("\n"),
             "# No config in gin/models/ has this architecture; these bindings state it.",
             "include '%s'" % SHARED_MODEL_GIN, ""]
    if config.vocab_size != 256:
        lines += ["# %d ids: not the Ankh3 vocabulary. Bind VOCABULARY to the tokenizer the "
                  "weights were" % config.vocab_size,
                  "# trained with (e.g. a seqio.SentencePieceVocabulary of its spiece.model).",
                  "VOCABULARY = %gin.REQUIRED", ""]
    lines.append("network.Ankh3Config:")
    for field in _ARCHITECTURE_FIELDS:
        if field in ("logits_via_embedding", "relative_attention_num_buckets",
                     "relative_attention_max_distance") and \
                getattr(config, field) == getattr(_SHARED_DEFAULTS, field):
            continue
        lines.append("  %s = %r" % (field, getattr(config, field)))
    return "\n".join(lines) + "\n" + ("\n" + profile if profile else "")


# What gin/models/encoder_decoder.gin binds for every model.
_SHARED_DEFAULTS = network.Ankh3Config(
    vocab_size=1, emb_dim=1, num_heads=1, num_encoder_layers=1, num_decoder_layers=1,
    head_dim=1, mlp_dim=1, logits_via_embedding=False, relative_attention_num_buckets=64,
    relative_attention_max_distance=128)


def configured_optimizer(gin_text: str):
    """The optimizer (`OPTIMIZER`, Adafactor) that a model gin configures."""
    import gin
    from t5x import adafactor

    gin.clear_config()
    gin.add_config_file_search_path(REPO_ROOT)
    try:
        gin.parse_config(gin_text)
        return gin.get_configurable(adafactor.Adafactor)()
    finally:
        gin.clear_config()


def import_hf(hf_dir: str, output_dir: str) -> tuple[network.Ankh3Config, str]:
    """Converts `hf_dir` into `output_dir` (module docstring); returns the config and model.gin."""
    config, params = read_hf(hf_dir)
    os.makedirs(output_dir, exist_ok=True)
    gin_text = model_gin_text(config, hf_dir, profile_head=PROFILE_HEAD in params)
    t5x_checkpoint.write_initial_checkpoint(config, params, output_dir,
                                            configured_optimizer(gin_text))
    gin_path = os.path.join(output_dir, "model.gin")
    with open(gin_path, "w") as f:
        f.write(gin_text)
    return config, gin_path


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf_dir", required=True, help="HF T5 directory (config.json, weights)")
    parser.add_argument("--output_dir", required=True, help="receives checkpoint_0/, model.gin")
    args = parser.parse_args(argv)
    try:
        config, gin_path = import_hf(args.hf_dir, args.output_dir)
    except hf_t5.UnsupportedConfigError as error:
        raise SystemExit("cannot import %s: %s" % (args.hf_dir, error))
    with open(gin_path) as f:
        print(f.read(), end="")
    print("imported %s -> %s (%d encoder / %d decoder layers, d_model %d)" % (
        args.hf_dir, os.path.join(args.output_dir, "checkpoint_0"), config.num_encoder_layers,
        config.num_decoder_layers, config.emb_dim))


if __name__ == "__main__":
    main()
