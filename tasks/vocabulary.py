"""The protein vocabulary of Ankh3: one id per residue, task prefixes, and T5-style sentinels.

Layout (256 ids; see the table in README.md):

    0 <pad>   1 </s>   2 <unk>   3 [NLU]   4 [S2S]   5 <unused_0>   6 <unused_1>
    7..26     L A G S V E R T I D P K N F Q Y H M C W   (Ankh3's own ids)
    27..31    X B Z U O
    32..255   <extra_id_223> ... <extra_id_0>           (<extra_id_k> = 255 - k)

The ids of `<pad>`, `</s>` and the 20 residues are those of the released Ankh3 tokenizer. The
places of the prefixes, of X B Z U O and of the sentinels are not published; the choice here keeps
the sentinels where T5 and seqio put them (`<extra_id_0>` is the highest id, counting down), so
`vocab_size - 1 - k` is the id of `<extra_id_k>` for this vocabulary and for a
`seqio.SentencePieceVocabulary` with `extra_ids` alike.
"""
import re
from typing import Sequence

import gin
import seqio
import tensorflow as tf
import tensorflow_text as tf_text

PAD = "<pad>"
EOS = "</s>"
UNK = "<unk>"
NLU_PREFIX = "[NLU]"
S2S_PREFIX = "[S2S]"
SPECIAL_TOKENS = (PAD, EOS, UNK, NLU_PREFIX, S2S_PREFIX, "<unused_0>", "<unused_1>")
# In id order from 7, as the released Ankh3 tokenizer numbers them.
RESIDUES = "LAGSVERTIDPKNFQYHMCW" + "XBZUO"
VOCAB_SIZE = 256
NUM_BASE_TOKENS = len(SPECIAL_TOKENS) + len(RESIDUES)
NUM_SENTINELS = VOCAB_SIZE - NUM_BASE_TOKENS

_SENTINEL_PATTERN = r"<extra_id_(\d+)>"
# A token is a special token, a sentinel, or any single character (newlines included).
_TOKEN_PATTERN = "|".join(
    [re.escape(token) for token in SPECIAL_TOKENS] + [_SENTINEL_PATTERN, r"(?s:.)"])
_TOKEN_RE = re.compile(_TOKEN_PATTERN)
_SENTINEL_RE = re.compile(_SENTINEL_PATTERN)


def sentinel_token(k: int) -> str:
    """The text of the k-th sentinel, `<extra_id_k>`."""
    return "<extra_id_%d>" % k


def _id_to_token() -> list[str]:
    base = list(SPECIAL_TOKENS) + list(RESIDUES)
    return base + [sentinel_token(VOCAB_SIZE - 1 - i) for i in range(len(base), VOCAB_SIZE)]


_ID_TO_TOKEN = _id_to_token()
_BASE_TOKEN_TO_ID = {token: i for i, token in enumerate(_ID_TO_TOKEN[:NUM_BASE_TOKENS])}
_UNK_ID = _BASE_TOKEN_TO_ID[UNK]
_ASCII_TO_ID = [_BASE_TOKEN_TO_ID.get(chr(code), _UNK_ID) for code in range(128)]


@gin.configurable(module="tasks.vocabulary")
class ProteinVocabulary(seqio.Vocabulary):
    """Ankh3's 256-id protein vocabulary (see the module docstring for the layout).

    `encode` and `encode_tf` map each residue letter to its id, recognise the special tokens and
    `<extra_id_k>` written out in the text, and map anything else (lowercase letters and
    whitespace included) to `<unk>`. `decode` and `decode_tf` show prefixes, sentinels and
    `<unk>` as their text, drop `<pad>` and stop at `</s>`.

    The sentinels are seqio's `extra_ids` (224 of them), so `vocab_size` is 256 and
    `_base_vocab_size` (special tokens and residues) is 32. No TensorFlow constant is kept on
    the instance: tables are built inside each call, because the first call can happen while
    tf.data traces a graph, and a tensor cached there cannot be used outside it.
    """

    def __init__(self):
        super().__init__(extra_ids=NUM_SENTINELS)

    @property
    def eos_id(self) -> int:
        return _BASE_TOKEN_TO_ID[EOS]

    @property
    def unk_id(self) -> int:
        return _UNK_ID

    @property
    def _base_vocab_size(self) -> int:
        return NUM_BASE_TOKENS

    def _encode(self, s: str) -> Sequence[int]:
        return [_token_id(match.group(0)) for match in _TOKEN_RE.finditer(s)]

    def _decode(self, ids: Sequence[int]) -> str:
        return "".join(_ID_TO_TOKEN[i] if 0 <= i < VOCAB_SIZE else UNK
                       for i in ids if i not in (self.pad_id, self.eos_id))

    def decode(self, ids) -> str:
        """Detokenizes ids up to the first `</s>`, showing sentinels (seqio would show `<unk>`)."""
        if isinstance(ids, tf.Tensor):
            ids = ids.numpy().tolist()
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self._decode(ids)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        s = tf.convert_to_tensor(s, dtype=tf.string)
        codes = tf.strings.unicode_decode(s, "UTF-8", errors="replace")
        # Text without `<` or `[` has no special tokens: a table look-up per code point suffices.
        has_markup = tf.reduce_any((codes == ord("<")) | (codes == ord("[")))

        def encode_tokens():
            ids = _encode_tokens_tf(tf.reshape(s, [-1]))
            return ids[0] if s.shape.rank == 0 else ids

        return tf.cond(has_markup, encode_tokens, lambda: _encode_characters_tf(codes))

    def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """Detokenizes a 1-D or batched 2-D id tensor up to each row's first `</s>`."""
        return self._decode_tf(ids)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.cast(ids, tf.int32)
        after_eos = tf.cumsum(tf.cast(tf.equal(ids, self.eos_id), tf.int32), axis=-1) > 0
        in_range = (ids >= 0) & (ids < VOCAB_SIZE)
        tokens = tf.gather(tf.constant(_ID_TO_TOKEN), tf.where(in_range, ids, self.unk_id))
        shown = tf.where(after_eos | tf.equal(ids, self.pad_id), "", tokens)
        return tf.strings.reduce_join(shown, axis=-1)

    def __eq__(self, other) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self).__qualname__)

    def __str__(self) -> str:
        return "ProteinVocabulary(size=%d, sentinels=%d)" % (VOCAB_SIZE, NUM_SENTINELS)


def _token_id(token: str) -> int:
    sentinel = _SENTINEL_RE.fullmatch(token)
    if sentinel:
        k = int(sentinel.group(1))
        return VOCAB_SIZE - 1 - k if k < NUM_SENTINELS else _UNK_ID
    return _BASE_TOKEN_TO_ID.get(token, _UNK_ID)


def _encode_characters_tf(codes):
    """One id per character, from a tensor (or ragged tensor) of Unicode code points."""
    table = tf.constant(_ASCII_TO_ID, dtype=tf.int32)
    return tf.where(codes < 128, tf.gather(table, tf.minimum(codes, 127)), _UNK_ID)


def _encode_tokens_tf(s: tf.Tensor) -> tf.RaggedTensor:
    """A 1-D batch of any text: split into tokens (special, sentinel or one character)."""
    tokens = tf_text.regex_split(s, _TOKEN_PATTERN, _TOKEN_PATTERN)
    flat = tokens.flat_values
    base_tokens = tf.constant(_ID_TO_TOKEN[:NUM_BASE_TOKENS])
    matches = tf.equal(flat[:, tf.newaxis], base_tokens[tf.newaxis, :])
    known = tf.reduce_any(matches, axis=1)
    named_id = tf.argmax(tf.cast(matches, tf.int32), axis=1, output_type=tf.int32)
    is_sentinel = tf.strings.regex_full_match(flat, _SENTINEL_PATTERN)
    number = tf.strings.to_number(
        tf.where(is_sentinel, tf.strings.regex_replace(flat, _SENTINEL_PATTERN, r"\1"), "0"),
        out_type=tf.int64)
    sentinel_id = tf.where(number < NUM_SENTINELS, VOCAB_SIZE - 1 - number, _UNK_ID)
    flat_ids = tf.where(known, named_id, tf.where(is_sentinel, tf.cast(sentinel_id, tf.int32),
                                                  _UNK_ID))
    return tokens.with_flat_values(flat_ids)
