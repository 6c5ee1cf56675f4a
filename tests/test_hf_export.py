"""models.export_hf: what `transformers` loads from an export computes what our network does."""
import json
import logging
import os

import numpy as np
import pytest

pytest.importorskip("t5x", reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")
pytest.importorskip("torch", reason="torch not installed (requirements.txt)")

import jax  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, T5Config, T5EncoderModel  # noqa: E402
from transformers import T5ForConditionalGeneration  # noqa: E402

from models import export_hf  # noqa: E402
from models import hf_parity  # noqa: E402
from models import hf_t5  # noqa: E402
from models import network  # noqa: E402
from models import param_count  # noqa: E402
from models import t5x_checkpoint  # noqa: E402
from tasks import vocabulary  # noqa: E402

TINY_GIN = "gin/models/tiny.gin"


@pytest.fixture(scope="module")
def exported(continued_run, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("export") / "hf")
    export_hf.main(["--checkpoint=" + continued_run["checkpoint"], "--gin_file=" + TINY_GIN,
                    "--output_dir=" + output])
    return output


@pytest.fixture(scope="module")
def trained_params(continued_run):
    return t5x_checkpoint.read_params(continued_run["checkpoint"])


def test_config_states_the_architecture(exported):
    with open(os.path.join(exported, "config.json")) as f:
        config = json.load(f)
    assert {k: config[k] for k in (
        "d_model", "d_ff", "d_kv", "num_heads", "num_layers", "num_decoder_layers",
        "feed_forward_proj", "relative_attention_num_buckets", "relative_attention_max_distance",
        "vocab_size", "tie_word_embeddings", "scale_decoder_outputs", "decoder_start_token_id",
        "pad_token_id", "eos_token_id")} == {
        "d_model": 64, "d_ff": 128, "d_kv": 16, "num_heads": 4, "num_layers": 2,
        "num_decoder_layers": 2, "feed_forward_proj": "gated-silu",
        "relative_attention_num_buckets": 64, "relative_attention_max_distance": 128,
        "vocab_size": 256, "tie_word_embeddings": False, "scale_decoder_outputs": False,
        "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}
    with open(os.path.join(exported, "generation_config.json")) as f:
        generation = json.load(f)
    assert (generation["decoder_start_token_id"], generation["eos_token_id"],
            generation["do_sample"]) == (0, 1, False)


def test_transformers_loads_every_weight_with_our_untied_head(exported, trained_params, caplog):
    with caplog.at_level(logging.WARNING):
        model, info = T5ForConditionalGeneration.from_pretrained(exported,
                                                                 output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(),
                    "error_msgs": []}
    # The head is the logits kernel, its own tensor (not the embedding, which transformers 5
    # would tie it to), and the decoder output is not rescaled (T5 v1.1, Ankh).
    head = model.lm_head.weight.detach().numpy()
    np.testing.assert_array_equal(head, trained_params["decoder"]["logits_dense"]["kernel"].T)
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert not np.array_equal(head, model.shared.weight.detach().numpy())
    assert model.config.scale_decoder_outputs is False
    # transformers 5 reports that it did not tie (its T5 config always claims tied weights).
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert all("NOT tie them" in w for w in warnings), warnings

    encoder, info = T5EncoderModel.from_pretrained(exported, output_loading_info=True)
    assert info["missing_keys"] == set() and info["mismatched_keys"] == set()
    # T5EncoderModel skips decoder.* by name but reports the head as unused, as for the released
    # Ankh checkpoints.
    assert info["unexpected_keys"] == {"lm_head.weight"}


def test_trained_tiny_model_agrees_with_transformers(exported, trained_params):
    config = param_count.network_config_from_gin(TINY_GIN)
    result = hf_parity.compare(config, trained_params, exported)
    print("trained tiny:", result)
    assert result["encoder_max_abs_diff"] < 1e-4, result
    assert result["logits_max_abs_diff"] < 1e-4, result
    # Same greedy completion of [S2S]MKAYVL and the same masked-residue predictions.
    assert result["ours"] == result["theirs"], result
    assert all(len(tokens) > 1 for tokens in result["ours"])


# Greedy decoding is compared for gated-GELU; gated-SiLU decodes are compared on the tiny model.
@pytest.mark.parametrize("activations,generate", [(("gelu", "linear"), True),
                                                  (("silu", "linear"), False)])
def test_uneven_depth_agrees_with_transformers(activations, generate, tmp_path):
    config = network.Ankh3Config(vocab_size=256, emb_dim=32, num_heads=2, head_dim=8,
                                 num_encoder_layers=4, num_decoder_layers=2, mlp_dim=48,
                                 mlp_activations=activations, dtype="float32")
    tokens = np.ones((1, 4), np.int32)
    params = network.Ankh3Transformer(config).init(
        jax.random.PRNGKey(1), tokens, tokens, tokens, enable_dropout=False)["params"]
    params = jax.tree_util.tree_map(np.asarray, params)
    export_hf.export(config, params, str(tmp_path / "hf"))
    loaded = T5Config.from_pretrained(str(tmp_path / "hf"))
    assert (loaded.num_layers, loaded.num_decoder_layers) == (4, 2)
    result = hf_parity.compare(config, params, str(tmp_path / "hf"), max_new_tokens=8,
                               generate=generate)
    print(activations, result)
    assert result["encoder_max_abs_diff"] < 1e-4, result
    assert result["logits_max_abs_diff"] < 1e-4, result
    assert result["ours"] == result["theirs"], result


@pytest.mark.parametrize("gin_file", ["gin/models/ankh3_large.gin", "gin/models/ankh3_xl.gin"])
def test_large_models_map_every_parameter_by_name_and_shape(gin_file):
    """Shape evaluation on both sides: our network's init and a transformers model on torch's
    meta device; no weight is allocated."""
    config = param_count.network_config_from_gin(gin_file)
    shapes = param_count.parameter_shapes(config)
    hf_t5.check_covers(config, shapes)
    ours = hf_t5.flatten(shapes)
    with torch.device("meta"):
        model = T5ForConditionalGeneration(T5Config(**hf_t5.hf_config_dict(config)))
    theirs = {name: tuple(p.shape) for name, p in model.named_parameters(remove_duplicate=False)}
    mapped = {}
    for path, name, transposed in hf_t5.name_map(config):
        shape = tuple(ours[path].shape)
        mapped[name] = shape[::-1] if transposed else shape
    tied_copies = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    assert mapped == {name: shape for name, shape in theirs.items() if name not in tied_copies}
    assert len(mapped) == len(ours)
    assert theirs["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] == (
        64, config.num_heads)


def test_tokenizer_matches_protein_vocabulary(exported):
    tokenizer = AutoTokenizer.from_pretrained(exported)
    pv = vocabulary.ProteinVocabulary()
    assert len(tokenizer) == 256
    for text in ["[NLU]MKAYVL", "[S2S]MKAYVL", "[NLU]M<extra_id_0>AY<extra_id_1>L<extra_id_223>",
                 "MKXBZUO", "mk a?", "<extra_id_224>"]:
        assert tokenizer(text).input_ids == pv.encode(text) + [pv.eos_id], text
        assert tokenizer(text, add_special_tokens=False).input_ids == pv.encode(text), text
    ids = pv.encode("<extra_id_0>MK<extra_id_1>A<extra_id_2>")
    assert tokenizer.decode(ids) == pv.decode(ids) == "<extra_id_0>MK<extra_id_1>A<extra_id_2>"
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)


def test_bfloat16_export(trained_params, tmp_path):
    from safetensors import safe_open

    config = param_count.network_config_from_gin(TINY_GIN)
    export_hf.export(config, trained_params, str(tmp_path / "bf16"), dtype="bfloat16")
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        head = f.get_tensor("lm_head.weight")
        assert {f.get_tensor(name).dtype for name in f.keys()} == {torch.bfloat16}
    expected = torch.from_numpy(trained_params["decoder"]["logits_dense"]["kernel"].T.copy())
    assert torch.equal(head, expected.to(torch.bfloat16))
    model = T5ForConditionalGeneration.from_pretrained(str(tmp_path / "bf16"))
    assert model.dtype == torch.bfloat16


def test_model_card_names_data_mixture_and_steps(exported, continued_run):
    with open(os.path.join(exported, "README.md")) as f:
        card = f.read()
    with open(os.path.join(continued_run["data_dir"], "manifest.json")) as f:
        manifest = json.load(f)
    assert "(step 5)" in card and "- `TRAIN_STEPS`: 5" in card
    assert "- release: `sample`" in card
    assert "train %d, validation %d" % (manifest["counts"]["train"],
                                        manifest["counts"]["validation"]) in card
    for output in manifest["outputs"]:
        if output["split"] == "train":
            assert output["sha256"] in card
    assert "- `ankh3_complete`: 0.5" in card and "- `ankh3_denoise_p10`: 0.1667" in card
    assert "T5EncoderModel.from_pretrained" in card and "python -m models.embed" in card


def test_export_is_complete_or_absent(trained_params, tmp_path):
    config = param_count.network_config_from_gin(TINY_GIN)
    target = tmp_path / "hf"
    export_hf.export(config, trained_params, str(target))
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_hf.export(config, trained_params, str(target))
    assert os.listdir(tmp_path) == ["hf"]  # no temporary directory left
    assert sorted(os.listdir(target)) == [
        "README.md", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json"]



def test_tokenizer_of_a_released_model_is_copied(trained_params, hf_tiny_t5, tmp_path):
    config = param_count.network_config_from_gin(TINY_GIN)
    export_hf.export(config, trained_params, str(tmp_path / "hf"), tokenizer_dir=hf_tiny_t5)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(hf_tiny_t5, name), "rb") as a, \
                open(tmp_path / "hf" / name, "rb") as b:
            assert a.read() == b.read(), name
    with pytest.raises(FileNotFoundError, match="holds no tokenizer file"):
        export_hf.export(config, trained_params, str(tmp_path / "other"),
                         tokenizer_dir=str(tmp_path / "hf" / "nowhere"))
    assert not (tmp_path / "other").exists()


def test_profile_head_is_exported_as_documented_extra_weights(profile_model):
    """profile_head.safetensors next to the T5 weights, named in config.json; transformers
    loads the model as before, and its encoder states through the head give models.embed's
    predicted profiles."""
    from safetensors.numpy import load_file

    from models import embed

    hf_dir = profile_model["hf_dir"]
    with open(os.path.join(hf_dir, "config.json")) as f:
        entry = json.load(f)["profile_head"]
    assert entry["file"] == "profile_head.safetensors" and entry["shape"] == [20, 64]
    assert entry["classes"] == "ACDEFGHIKLMNPQRSTVWY"
    (weight,) = load_file(os.path.join(hf_dir, entry["file"])).values()
    np.testing.assert_array_equal(weight, profile_model["params"]["profile_head"]["kernel"].T)
    encoder, info = T5EncoderModel.from_pretrained(hf_dir, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == {"lm_head.weight"}
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    with torch.no_grad():
        hidden = encoder.eval()(**tokenizer(["[NLU]MKAYVLGA"], return_tensors="pt"))
    theirs = torch.softmax(hidden.last_hidden_state[0, 1:-1] @ torch.from_numpy(weight).T, -1)
    ours_encoder = embed.load_encoder(hf_dir=hf_dir)
    (ours,) = ours_encoder.profiles(ours_encoder.embed(["MKAYVLGA"], progress=False))
    np.testing.assert_allclose(theirs.numpy(), ours, atol=1e-5)
    card = export_hf.model_card(param_count.network_config_from_gin(TINY_GIN), "checkpoint_5",
                                profile_head=True)
    assert "`profile_head.safetensors`, tensor `profile_head.weight` [20, d_model]" in card
