"""The correspondence between this project's network and Hugging Face's T5: config and weights.

One place for both directions (`models.export_hf` writes with it, `models.import_hf` and
`models.embed` read with it), so that a name or a transposition cannot differ between them.

Weights (t5x name -> HF name; every kernel is transposed, since t5x kernels are [in, out] and
torch `Linear` weights [out, in]; t5x's attention kernels are already [emb, heads * head_dim]):

    token_embedder/embedding                  shared.weight
    encoder/layers_i/attention/{query,key,value,out}/kernel
                                  encoder.block.i.layer.0.SelfAttention.{q,k,v,o}.weight
    encoder/layers_i/pre_attention_layer_norm/scale
                                  encoder.block.i.layer.0.layer_norm.weight
    encoder/layers_i/mlp/{wi_0,wi_1,wo}/kernel
                                  encoder.block.i.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight
    encoder/layers_i/pre_mlp_layer_norm/scale encoder.block.i.layer.1.layer_norm.weight
    encoder/relpos_bias/rel_embedding [heads, buckets]
        encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight
    encoder/encoder_norm/scale                encoder.final_layer_norm.weight
    decoder/layers_i/self_attention/...       decoder.block.i.layer.0.SelfAttention...
    decoder/layers_i/encoder_decoder_attention/...    decoder.block.i.layer.1.EncDecAttention...
    decoder/layers_i/mlp/...                      decoder.block.i.layer.2.DenseReluDense...
    decoder/relpos_bias, decoder/decoder_norm     as the encoder's
    decoder/logits_dense/kernel                   lm_head.weight (untied from shared.weight)

The profile model's head (models/profile_model.py) has no T5 counterpart. It travels as a file
of its own next to `model.safetensors`, which `transformers` never reads:

    profile_head/kernel [d_model, 20]   profile_head.safetensors: profile_head.weight [20, d_model]

and `config.json` names it under `profile_head` (`profile_head_config`): the file, the tensor,
the 20 classes in HMMER's order ACDEFGHIKLMNPQRSTVWY, and what it reads (the encoder's
`last_hidden_state`, softmax over the 20 logits).

Only float32 numpy arrays travel through this module; no torch is needed.
"""
import os
from typing import Any, Iterator, Mapping

import numpy as np

from models import network

# Hugging Face's name for each gated / plain MLP activation of `Ankh3Config.mlp_activations`.
_FEED_FORWARD_PROJ = {
    ("silu", "linear"): "gated-silu",
    ("gelu", "linear"): "gated-gelu",
    ("relu", "linear"): "gated-relu",
    ("relu",): "relu",
    ("gelu",): "gelu",
    ("silu",): "silu",
}
_MLP_ACTIVATIONS = {proj: activations for activations, proj in _FEED_FORWARD_PROJ.items()}
LAYER_NORM_EPSILON = 1e-6
PAD_ID = 0
EOS_ID = 1
DECODER_START_ID = 0


class UnsupportedConfigError(ValueError):
    """A Hugging Face config (or a network config) that the other side cannot represent."""


def hf_config_dict(config: network.Ankh3Config) -> dict:
    """The `config.json` fields of `T5ForConditionalGeneration` for the network `config`."""
    if config.logits_via_embedding:
        raise UnsupportedConfigError(
            "logits_via_embedding=True (tied output projection) is not exported: Ankh models "
            "untie it, and transformers' T5 would rescale a tied head's inputs differently")
    try:
        feed_forward_proj = _FEED_FORWARD_PROJ[tuple(config.mlp_activations)]
    except KeyError:
        raise UnsupportedConfigError(
            "mlp_activations %r have no Hugging Face T5 equivalent (supported: %s)"
            % (config.mlp_activations, sorted(_FEED_FORWARD_PROJ))) from None
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.emb_dim,
        "d_kv": config.head_dim,
        "d_ff": config.mlp_dim,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "feed_forward_proj": feed_forward_proj,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        # False also tells transformers' T5 not to rescale the decoder output by d_model ** -0.5
        # (T5 v1.1 / Ankh behaviour); the head itself stays a separate weight on loading.
        "tie_word_embeddings": False,
        "use_cache": True,
        "pad_token_id": PAD_ID,
        "eos_token_id": EOS_ID,
        "decoder_start_token_id": DECODER_START_ID,
    }


def network_config(hf_config: Mapping[str, Any], *, dtype: str = "float32") -> network.Ankh3Config:
    """The network config equal to a Hugging Face T5 `config.json` (a dict).

    Raises UnsupportedConfigError for what the network cannot represent: a tied output
    projection, an activation it lacks, an epsilon other than 1e-6, a model other than T5.
    """
    def field(name, default=None):
        value = hf_config.get(name, default)
        if value is None:
            raise UnsupportedConfigError("config.json has no %r" % name)
        return value

    if hf_config.get("model_type", "t5") != "t5":
        raise UnsupportedConfigError(
            "model_type %r is not T5" % hf_config.get("model_type"))
    # transformers < 5 writes tie_word_embeddings false for an untied, unscaled head (T5 v1.1,
    # Ankh); transformers 5 writes scale_decoder_outputs false (and tie_word_embeddings true,
    # always). A head that is tied is refused later, when lm_head.weight is missing.
    scaled = hf_config.get("scale_decoder_outputs",
                           hf_config.get("tie_word_embeddings", True) is not False)
    if scaled:
        raise UnsupportedConfigError(
            "the config ties the output projection to the embedding and rescales the decoder "
            "output (original T5: tie_word_embeddings not false); the network has an untied "
            "head, as every Ankh model")
    proj = field("feed_forward_proj", "relu")
    if proj not in _MLP_ACTIVATIONS:
        raise UnsupportedConfigError(
            "feed_forward_proj %r is not supported (supported: %s)"
            % (proj, sorted(_MLP_ACTIVATIONS)))
    epsilon = hf_config.get("layer_norm_epsilon", LAYER_NORM_EPSILON)
    if abs(epsilon - LAYER_NORM_EPSILON) > 1e-12:
        raise UnsupportedConfigError(
            "layer_norm_epsilon %g differs from the network's fixed 1e-6" % epsilon)
    num_layers = field("num_layers", 6)
    try:
        return network.Ankh3Config(
            vocab_size=field("vocab_size"),
            emb_dim=field("d_model"),
            num_heads=field("num_heads"),
            head_dim=field("d_kv"),
            mlp_dim=field("d_ff"),
            num_encoder_layers=num_layers,
            num_decoder_layers=hf_config.get("num_decoder_layers") or num_layers,
            mlp_activations=_MLP_ACTIVATIONS[proj],
            dtype=dtype,
            dropout_rate=0.0,
            logits_via_embedding=False,
            relative_attention_num_buckets=field("relative_attention_num_buckets", 32),
            relative_attention_max_distance=field("relative_attention_max_distance", 128),
        )
    except ValueError as error:
        raise UnsupportedConfigError(str(error)) from error


def _mlp_names(config: network.Ankh3Config) -> list[str]:
    if len(config.mlp_activations) == 1:
        return ["wi", "wo"]
    return ["wi_%d" % i for i in range(len(config.mlp_activations))] + ["wo"]


def name_map(config: network.Ankh3Config) -> Iterator[tuple[tuple[str, ...], str, bool]]:
    """(t5x parameter path, HF weight name, transposed) for every parameter of the network."""
    yield ("token_embedder", "embedding"), "shared.weight", False
    mlp = _mlp_names(config)
    stacks = (("encoder", config.num_encoder_layers, (("attention", "SelfAttention"),),
               "pre_attention_layer_norm"),
              ("decoder", config.num_decoder_layers,
               (("self_attention", "SelfAttention"), ("encoder_decoder_attention",
                                                      "EncDecAttention")),
               "pre_self_attention_layer_norm"))
    for stack, depth, attentions, first_norm in stacks:
        for i in range(depth):
            layer = "layers_%d" % i
            block = "%s.block.%d.layer" % (stack, i)
            for index, (ours, theirs) in enumerate(attentions):
                for projection, hf_projection in zip(("query", "key", "value", "out"), "qkvo"):
                    yield ((stack, layer, ours, projection, "kernel"),
                           "%s.%d.%s.%s.weight" % (block, index, theirs, hf_projection), True)
            norms = [first_norm] + (["pre_cross_attention_layer_norm"] if stack == "decoder"
                                    else [])
            for index, norm in enumerate(norms):
                yield (stack, layer, norm, "scale"), "%s.%d.layer_norm.weight" % (block, index), \
                    False
            mlp_index = len(attentions)
            for name in mlp:
                yield ((stack, layer, "mlp", name, "kernel"),
                       "%s.%d.DenseReluDense.%s.weight" % (block, mlp_index, name), True)
            yield ((stack, layer, "pre_mlp_layer_norm", "scale"),
                   "%s.%d.layer_norm.weight" % (block, mlp_index), False)
        yield ((stack, "relpos_bias", "rel_embedding"),
               "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight" % stack, True)
        yield (stack, "%s_norm" % stack, "scale"), "%s.final_layer_norm.weight" % stack, False
    yield ("decoder", "logits_dense", "kernel"), "lm_head.weight", True


def _get(tree: Mapping, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def to_hf_state_dict(config: network.Ankh3Config, params: Mapping) -> dict[str, np.ndarray]:
    """HF T5 weights (name -> contiguous float32 array) from the network's parameter tree."""
    state = {}
    for path, name, transposed in name_map(config):
        value = np.asarray(_get(params, path), dtype=np.float32)
        state[name] = np.ascontiguousarray(value.T if transposed else value)
    return state


def from_hf_state_dict(config: network.Ankh3Config, state: Mapping[str, np.ndarray], *,
                       encoder_only: bool = False, source: str = "the checkpoint") -> dict:
    """The network's parameter tree (nested dicts of float32 arrays) from HF T5 weights.

    With `encoder_only`, only the embedding and the encoder are read (a `T5EncoderModel`
    checkpoint has no decoder). Raises UnsupportedConfigError naming the first missing weight
    or wrong shape; weights left over (other than the encoder/decoder copies of the shared
    embedding) are an error too, since they mean the checkpoint is not the architecture the
    config states.
    """
    expected = expected_shapes(config)
    params: dict = {}
    used = set()
    for path, name, transposed in name_map(config):
        if encoder_only and path[0] == "decoder":
            continue
        if name not in state:
            tied = " (a tied output projection is not supported)" if name == "lm_head.weight" \
                else ""
            raise UnsupportedConfigError("%s has no weight %r%s" % (source, name, tied))
        value = np.asarray(state[name], dtype=np.float32)
        value = value.T if transposed else value
        if value.shape != expected[path]:
            hf_shape = expected[path][::-1] if transposed else expected[path]
            raise UnsupportedConfigError(
                "%s: weight %r has shape %s, the config implies %s"
                % (source, name, tuple(state[name].shape), hf_shape))
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        used.add(name)
    tied_copies = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    extra = sorted(set(state) - used - tied_copies)
    if encoder_only:
        extra = [name for name in extra if not name.startswith(("decoder.", "lm_head."))]
    if extra:
        raise UnsupportedConfigError(
            "%s holds weights the config does not describe: %s" % (source, ", ".join(extra[:5])))
    for copy in tied_copies & set(state):
        if not np.array_equal(np.asarray(state[copy], dtype=np.float32), state["shared.weight"]):
            raise UnsupportedConfigError(
                "%s: %s differs from shared.weight (untied input embeddings are not supported)"
                % (source, copy))
    return params


PROFILE_HEAD_FILE = "profile_head.safetensors"
PROFILE_HEAD_TENSOR = "profile_head.weight"
PROFILE_HEAD_CONFIG_KEY = "profile_head"
PROFILE_CLASSES = "ACDEFGHIKLMNPQRSTVWY"


def profile_head_config(config: network.Ankh3Config) -> dict:
    """The `profile_head` entry of config.json (module docstring)."""
    return {"file": PROFILE_HEAD_FILE, "tensor": PROFILE_HEAD_TENSOR,
            "shape": [len(PROFILE_CLASSES), config.emb_dim], "classes": PROFILE_CLASSES,
            "input": "encoder last_hidden_state",
            "output": "logits; softmax gives the predicted profile (MSA column distribution)"}


def profile_head_state(params: Mapping) -> dict[str, np.ndarray]:
    """profile_head.safetensors' tensors from a parameter tree with a `profile_head`."""
    kernel = np.asarray(params["profile_head"]["kernel"], np.float32)
    return {PROFILE_HEAD_TENSOR: np.ascontiguousarray(kernel.T)}


def read_profile_head(hf_dir: str, hf_config: Mapping[str, Any],
                      config: network.Ankh3Config) -> Any:
    """`{"kernel": [d_model, 20] float32}` of an HF directory whose config.json names a profile
    head, or None when it names none. Raises UnsupportedConfigError naming the file when the
    file is missing or its tensor has the wrong shape."""
    entry = hf_config.get(PROFILE_HEAD_CONFIG_KEY)
    if entry is None:
        return None
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel

    path = os.path.join(hf_dir, entry.get("file", PROFILE_HEAD_FILE))
    if not os.path.exists(path):
        raise UnsupportedConfigError("config.json names a profile head in %s, which is missing"
                                     % path)
    tensor = entry.get("tensor", PROFILE_HEAD_TENSOR)
    with safe_open(path, framework="numpy") as f:
        if tensor not in f.keys():
            raise UnsupportedConfigError("%s has no tensor %r" % (path, tensor))
        weight = np.asarray(f.get_tensor(tensor), np.float32)
    expected = (len(PROFILE_CLASSES), config.emb_dim)
    if weight.shape != expected:
        raise UnsupportedConfigError("%s: %s has shape %s, expected %s"
                                     % (path, tensor, weight.shape, expected))
    return {"kernel": np.ascontiguousarray(weight.T)}


def expected_shapes(config: network.Ankh3Config) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Shape of every network parameter (by path), by shape evaluation of the network's init."""
    from models import param_count  # imports jax; kept out of the module's import time

    shapes = param_count.parameter_shapes(config)
    return {path: tuple(_get(shapes, path).shape) for path, _, _ in name_map(config)}


def flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """{path tuple: leaf} of a nested dict."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


def check_covers(config: network.Ankh3Config, params: Mapping) -> None:
    """Raises ValueError unless `name_map` names every parameter of the network exactly once."""
    mapped = [path for path, _, _ in name_map(config)]
    if len(set(mapped)) != len(mapped):
        raise ValueError("name_map names a parameter twice")
    actual = set(flatten(params))
    missing, extra = actual - set(mapped), set(mapped) - actual
    if missing or extra:
        raise ValueError("name_map does not match the network: unmapped %s, unknown %s"
                         % (sorted(missing)[:5], sorted(extra)[:5]))
