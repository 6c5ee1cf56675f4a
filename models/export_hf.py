"""Export a t5x checkpoint of the network to a Hugging Face T5 directory.

    python -m models.export_hf --checkpoint=MODEL_DIR/checkpoint_N \\
        --gin_file=gin/models/ankh3_large.gin --output_dir=OUT [--dtype=bfloat16]

OUT then holds, for `transformers` (offline, no code of this project needed):
- `config.json`: the architecture exactly (`models.hf_t5.hf_config_dict`: uneven encoder/decoder
  depth, gated-SiLU or gated-GELU, 64 relative-position buckets up to distance 128, an untied
  `lm_head`, `decoder_start_token_id` 0, pad 0, eos 1);
- `model.safetensors`: every weight once (float32, or bfloat16 with --dtype=bfloat16), the
  output projection as `lm_head.weight`, distinct from `shared.weight`;
- `generation_config.json`: greedy decoding from id 0, stopping at `</s>`;
- `tokenizer.json` / `tokenizer_config.json`: a fast tokenizer (built with `tokenizers`) that
  gives the ids of `tasks.vocabulary.ProteinVocabulary` and appends `</s>`, as T5 tokenizers do
  (or, with --tokenizer_dir, the tokenizer files of a released model, e.g. Ankh3's
  `spiece.model`, for a model trained with that vocabulary);
- with a checkpoint of the profile model (models/profile_model.py): `profile_head.safetensors`,
  the profile head as `profile_head.weight` [20, d_model], named in config.json's `profile_head`
  entry (`models.hf_t5.profile_head_config`; docs/profiles.md shows its use);
- `README.md`: a model card with the architecture, the training data (the data manifest's
  release, counts and shard sha256), the mixture (`ankh3_pretrain`, or `ankh3_profile`) and its
  rates, the steps, and how to embed
  and generate.

The directory is written under a temporary name and renamed when complete.
"""
import argparse
import ast
import json
import os
import re
import shutil
import sys
import time
from typing import Mapping, Optional, Sequence

import numpy as np

from models import hf_t5
from models import network
from models import t5x_checkpoint
from tasks import vocabulary

NETWORK_PARAMS = ("token_embedder", "encoder", "decoder")
# The profile model's head: exported to a file of its own (module docstring).
PROFILE_HEAD = "profile_head"
# Greedy generation of up to one crop of Ankh3's training length.
GENERATION_MAX_LENGTH = 512
WEIGHTS_FILE = "model.safetensors"


def protein_tokenizer():
    """A `PreTrainedTokenizerFast` with the ids of `ProteinVocabulary` (256 ids).

    One token per character; `<pad>`, `</s>`, `<unk>`, the prefixes `[NLU]` / `[S2S]`, the unused
    ids and the sentinels `<extra_id_k>` are special tokens recognised in the text. Anything
    else (lowercase, whitespace, unknown letters) is `<unk>`, as in `ProteinVocabulary`.
    Encoding appends `</s>` (T5's convention; `add_special_tokens=False` leaves it out).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    pv = vocabulary.ProteinVocabulary()
    tokens = [pv.decode([i]) if i not in (pv.pad_id, pv.eos_id) else None
              for i in range(pv.vocab_size)]
    tokens[pv.pad_id], tokens[pv.eos_id] = vocabulary.PAD, vocabulary.EOS
    tokens[pv.unk_id] = vocabulary.UNK
    if len(set(tokens)) != pv.vocab_size:
        raise AssertionError("ProteinVocabulary ids do not decode to distinct tokens")
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)},
                                           unk_token=vocabulary.UNK))
    # A would-be sentinel out of range stays one token (hence one <unk>), as in ProteinVocabulary.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m)<extra_id_[0-9]+>|."),
                                                   behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    specials = [t for t in tokens if len(t) > 1]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in specials])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A %s" % vocabulary.EOS, pair="$A %s $B %s" % (vocabulary.EOS, vocabulary.EOS),
        special_tokens=[(vocabulary.EOS, pv.eos_id)])
    named = (vocabulary.PAD, vocabulary.EOS, vocabulary.UNK)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=vocabulary.PAD, eos_token=vocabulary.EOS,
        unk_token=vocabulary.UNK, model_max_length=int(1e30),
        additional_special_tokens=[t for t in specials if t not in named])


def generation_config_dict() -> dict:
    return {
        "decoder_start_token_id": hf_t5.DECODER_START_ID,
        "pad_token_id": hf_t5.PAD_ID,
        "eos_token_id": hf_t5.EOS_ID,
        "do_sample": False,
        "num_beams": 1,
        "max_length": GENERATION_MAX_LENGTH,
    }


def save_weights(state: Mapping[str, np.ndarray], path: str, dtype: str) -> None:
    """model.safetensors with torch's layout tag; bfloat16 by ml_dtypes, no torch needed."""
    from safetensors.numpy import save_file

    if dtype == "bfloat16":
        import ml_dtypes
        state = {name: value.astype(ml_dtypes.bfloat16) for name, value in state.items()}
    elif dtype != "float32":
        raise ValueError("dtype must be float32 or bfloat16, got %r" % dtype)
    save_file(dict(state), path, metadata={"format": "pt"})


# ---------------------------------------------------------------------------- model card

def _gin_bindings(path: str) -> dict:
    """`name = literal` lines of a t5x operative config (config.gin), macros resolved."""
    bindings, text = {}, open(path).read()
    # Values may continue over several lines (dicts); join each binding's lines.
    for match in re.finditer(r"^([\w./]+) = (.*?)(?=^[\w./#]|\Z)", text, re.M | re.S):
        bindings[match.group(1)] = match.group(2).strip()

    def resolve(value: str, depth: int = 0):
        if value.startswith("%") and depth < 10:
            return resolve(bindings.get(value[1:], "None"), depth + 1)
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value

    return {name: resolve(value) for name, value in bindings.items()}


def _mixture_rates(bindings: Mapping) -> Optional[tuple[str, list]]:
    """(mixture name, [(task, rate)]) of the run's mixture as it configured it (`ankh3_pretrain`,
    or `ankh3_profile` for a profile run), or None."""
    profile_run = "ankh3_profile_mixture" in str(bindings.get("MIXTURE_OR_TASK_NAME", ""))
    prefix = ("profile_tasks.ankh3_profile_mixture." if profile_run
              else "mixtures.ankh3_pretrain_mixture.")
    kwargs = {name[len(prefix):]: value for name, value in bindings.items()
              if name.startswith(prefix)}
    if "data_dir" not in kwargs:
        return None
    kwargs.pop("vocabulary", None)  # a reference, not a literal; rates do not depend on it
    try:
        import seqio
        from tasks import mixtures
        from tasks import profile_tasks
        function = (profile_tasks.ankh3_profile_mixture if profile_run
                    else mixtures.ankh3_pretrain_mixture)
        name = function(**kwargs)
        mixture = seqio.get_mixture_or_task(name)
        return name, [(task.name, mixture.get_rate(task)) for task in mixture.tasks]
    except Exception as error:  # a card without rates beats no export
        print("model card: mixture rates unavailable (%s)" % error, file=sys.stderr)
        return None


def model_card(config: network.Ankh3Config, checkpoint: str, *,
               run_config: Optional[str] = None, manifest: Optional[str] = None,
               profile_head: bool = False) -> str:
    """README.md of the export: architecture, data, mixture, steps, usage."""
    step = re.search(r"checkpoint_(\d+)", os.path.basename(os.path.normpath(checkpoint)))
    bindings = _gin_bindings(run_config) if run_config and os.path.exists(run_config) else {}
    data_dir = bindings.get("DATA_DIR") or bindings.get("mixtures.ankh3_pretrain_mixture.data_dir")
    if manifest is None and isinstance(data_dir, str):
        manifest = os.path.join(data_dir, "manifest.json")
    hf = hf_t5.hf_config_dict(config)
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text2text-generation",
        "tags: [protein, ankh3, t5]", "---", "",
        "# Ankh3-style protein language model (T5 encoder-decoder)", "",
        "Exported from the t5x checkpoint `%s` (step %s) by `models.export_hf`."
        % (checkpoint, step.group(1) if step else "unknown"), "",
        "## Architecture", "",
        "| d_model | encoder layers | decoder layers | heads | d_kv | d_ff | MLP | "
        "rel. pos. buckets / max distance | vocab |", "|---|---|---|---|---|---|---|---|---|",
        "| %d | %d | %d | %d | %d | %d | %s | %d / %d | %d |" % (
            hf["d_model"], hf["num_layers"], hf["num_decoder_layers"], hf["num_heads"],
            hf["d_kv"], hf["d_ff"], hf["feed_forward_proj"],
            hf["relative_attention_num_buckets"], hf["relative_attention_max_distance"],
            hf["vocab_size"]), "",
        "Untied input embedding and output projection (`lm_head`), no dropout at export.", ""]
    if profile_head:
        lines += ["Profile head (profile prediction): `%s`, tensor `%s` [20, d_model], applied "
                  "to the encoder's `last_hidden_state`; softmax gives each residue's predicted "
                  "profile over %s (`profile_head` in config.json)." % (
                      hf_t5.PROFILE_HEAD_FILE, hf_t5.PROFILE_HEAD_TENSOR,
                      hf_t5.PROFILE_CLASSES), ""]
    lines += ["## Training", ""]
    if bindings:
        for name in ("TRAIN_STEPS", "BATCH_SIZE", "TASK_FEATURE_LENGTHS"):
            if name in bindings:
                lines.append("- `%s`: %s" % (name, bindings[name]))
        schedule = {k.split(".")[-1]: v for k, v in bindings.items()
                    if k.startswith("utils.create_learning_rate_scheduler.")}
        if schedule:
            lines.append("- learning rate: %s" % ", ".join(
                "%s=%s" % item for item in sorted(schedule.items())))
        mixture = _mixture_rates(bindings)
        if mixture:
            lines += ["", "Mixture `%s` (task: rate):" % mixture[0], ""]
            lines += ["- `%s`: %.4g" % (task, rate) for task, rate in mixture[1]]
    else:
        lines.append("Run config not found (%s): steps and mixture not recorded." % run_config)
    lines += ["", "## Training data", ""]
    if manifest and os.path.exists(manifest):
        with open(manifest) as f:
            data = json.load(f)
        release = data.get("release", {})
        counts = data.get("counts", {})
        residues = data.get("residues", {})
        lines += ["- release: `%s` (%s)" % (release.get("release"), release.get("source")),
                  "- proteins: train %s, validation %s; rejected %s, duplicates %s"
                  % (counts.get("train"), counts.get("validation"),
                     counts.get("rejected_total"), counts.get("duplicates")),
                  "- residues: train %s, validation %s"
                  % (residues.get("train"), residues.get("validation")),
                  "- inputs: " + ", ".join("`%s` (%s records, md5 %s)" % (
                      i.get("path"), i.get("records"), i.get("md5"))
                      for i in data.get("inputs", [])),
                  "", "| shard | records | sha256 |", "|---|---|---|"]
        lines += ["| %s | %s | `%s` |" % (o["name"], o.get("records"), o.get("sha256"))
                  for o in data.get("outputs", []) if o.get("split") in ("train", "validation")]
    else:
        lines.append("Data manifest not found (%s)." % manifest)
    lines += ["", "## Use", "",
              "Embeddings (the encoder reads `[NLU]` + residues + `</s>`; drop the first and last "
              "rows before pooling):", "", "```python",
              "import torch",
              "from transformers import AutoTokenizer, T5EncoderModel",
              "tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)",
              "model = T5EncoderModel.from_pretrained(MODEL_DIR).eval()",
              "batch = tokenizer(['[NLU]MKAYVLGA'], return_tensors='pt')",
              "with torch.no_grad():",
              "    hidden = model(**batch).last_hidden_state[0, 1:-1]  # [residues, d_model]",
              "embedding = hidden.mean(0)", "```", "",
              "Completion (`[S2S]` + the first part of a protein) and masked-residue prediction "
              "(`[NLU]` with `<extra_id_k>` sentinels):", "", "```python",
              "from transformers import T5ForConditionalGeneration",
              "model = T5ForConditionalGeneration.from_pretrained(MODEL_DIR).eval()",
              "ids = tokenizer(['[S2S]MKAYVL'], return_tensors='pt').input_ids",
              "print(tokenizer.decode(model.generate(ids, max_new_tokens=64)[0], "
              "skip_special_tokens=True))", "```", "",
              "The same embeddings from this project's JAX code: `python -m models.embed "
              "--hf_dir=MODEL_DIR --input=proteins.fasta --output=embeddings.npz`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- export

# A released model's tokenizer (the Ankh3 downloads hold spiece.model and its configs).
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")


def export(config: network.Ankh3Config, params: Mapping, output_dir: str, *,
           dtype: str = "float32", card: str = "", overwrite: bool = False,
           tokenizer_dir: Optional[str] = None) -> None:
    """Writes the HF directory (module docstring) for the network `config` with `params`.

    `tokenizer_dir`: copy that directory's tokenizer files (e.g. a download of
    `ElnaggarLab/ankh3-large`, for a model trained with Ankh3's `spiece.model` through
    `seqio.SentencePieceVocabulary`) instead of writing the `ProteinVocabulary` tokenizer.
    """
    hf_t5.check_covers(config, {name: params[name] for name in NETWORK_PARAMS})
    has_profile_head = PROFILE_HEAD in params
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError("%s exists (pass --overwrite to replace it)" % output_dir)
    tokenizer_files = []
    if tokenizer_dir is not None:
        tokenizer_files = [os.path.join(tokenizer_dir, name) for name in TOKENIZER_FILES
                           if os.path.exists(os.path.join(tokenizer_dir, name))]
        if not tokenizer_files:
            raise FileNotFoundError("%s holds no tokenizer file (%s)"
                                    % (tokenizer_dir, ", ".join(TOKENIZER_FILES)))
    temporary = "%s.tmp-%d" % (os.path.normpath(output_dir), os.getpid())
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    try:
        with open(os.path.join(temporary, "config.json"), "w") as f:
            hf_config = dict(hf_t5.hf_config_dict(config), torch_dtype=dtype, dtype=dtype)
            # transformers >= 5 reads this flag (and writes tie_word_embeddings true regardless).
            hf_config["scale_decoder_outputs"] = False
            if has_profile_head:
                hf_config[hf_t5.PROFILE_HEAD_CONFIG_KEY] = hf_t5.profile_head_config(config)
            json.dump(hf_config, f, indent=2, sort_keys=True)
        with open(os.path.join(temporary, "generation_config.json"), "w") as f:
            json.dump(generation_config_dict(), f, indent=2, sort_keys=True)
        save_weights(hf_t5.to_hf_state_dict(config, params),
                     os.path.join(temporary, WEIGHTS_FILE), dtype)
        if has_profile_head:
            save_weights(hf_t5.profile_head_state(params),
                         os.path.join(temporary, hf_t5.PROFILE_HEAD_FILE), dtype)
        if tokenizer_dir is None:
            protein_tokenizer().save_pretrained(temporary)
        for path in tokenizer_files:
            shutil.copy(path, temporary)
        with open(os.path.join(temporary, "README.md"), "w") as f:
            f.write(card)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.replace(temporary, output_dir)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line (module docstring)."""
    from models import param_count

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="t5x checkpoint_N directory")
    parser.add_argument("--gin_file", required=True, help="the model gin of the checkpoint")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype of the weights in model.safetensors")
    parser.add_argument("--run_config", help="the run's operative config (default: config.gin "
                        "in the checkpoint's parent, which t5x writes)")
    parser.add_argument("--manifest", help="the data manifest (default: manifest.json in the "
                        "run's DATA_DIR)")
    parser.add_argument("--tokenizer_dir", help="copy this directory's tokenizer (e.g. a "
                        "released Ankh3 download, for a model trained with its spiece.model) "
                        "instead of writing the ProteinVocabulary tokenizer")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    config = param_count.network_config_from_gin(args.gin_file)
    params = t5x_checkpoint.read_params(args.checkpoint)
    ignored = sorted(set(params) - set(NETWORK_PARAMS) - {PROFILE_HEAD})
    if ignored:
        print("not exported (no Hugging Face T5 counterpart): %s" % ", ".join(ignored))
    run_config = args.run_config or os.path.join(
        os.path.dirname(os.path.normpath(args.checkpoint)), "config.gin")
    card = model_card(config, args.checkpoint, run_config=run_config, manifest=args.manifest,
                      profile_head=PROFILE_HEAD in params)
    export(config, params, args.output_dir, dtype=args.dtype, card=card,
           overwrite=args.overwrite, tokenizer_dir=args.tokenizer_dir)
    print("exported %s -> %s (%s) in %.1f s" % (
        args.checkpoint, args.output_dir, args.dtype, time.perf_counter() - start))


if __name__ == "__main__":
    main()
