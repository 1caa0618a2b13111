"""CLIP-style byte-level BPE tokenizer for text-conditioned transformers (text ids first, codes shifted
by 49408). Vocabulary: ids 0..255 the byte symbols (in the byte-to-unicode table's order), 256..511
the same with the end-of-word marker ``</w>``, 512..49405 one per merge of
``bpe_simple_vocab_16e6.txt.gz`` (48894 merges, in order; package data, origin and license in
``LICENSE-bpe-vocab.txt``), 49406 ``<|startoftext|>``, 49407 ``<|endoftext|>``. Written from the
published description of the scheme::

    BPETokenizer().encode("a photo of a cat")   # [320, 1125, 539, 320, 2368]
    tokenize(["a cat"], context_length=8)       # LongTensor (1, 8): [49406, 320, 2368, 49407, 0, 0, 0, 0]
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import ftfy
import regex
import torch

VOCAB_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
N_MERGES = 49152 - 256 - 2  # merges used by CLIP: the first 48894 lines after the version header
VOCAB_SIZE = 49408  # 2 * 256 byte tokens + 48894 merges + 2 special tokens
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
SOT_ID, EOT_ID = 49406, 49407
END_OF_WORD = "</w>"

# Pre-tokenisation: special tokens, common English contractions, runs of letters, single digits,
# runs of other non-space symbols. Case-insensitive as in CLIP (text is lower-cased anyway).
_WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters.

    Bytes that are already visible, non-space Latin-1 characters map to themselves; the other 68
    (controls, space, soft hyphen, ...) map to code points 256, 257, ... in increasing byte order,
    so that BPE never has to handle whitespace or control characters. The dict's insertion order
    (visible bytes first, then the remapped ones) is the order of token ids 0..255.
    """
    visible = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1))
        + list(range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1))
    )
    table = {b: chr(b) for b in visible}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clean_text(text: str) -> str:
    """Normalise text the way the tokenizer sees it: ftfy fixes, HTML unescaping (twice, for
    doubly escaped captions), whitespace runs collapsed to one space, stripped, lower-cased."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    text = regex.sub(r"\s+", " ", text).strip()
    return text.lower()


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word[:-1], word[1:])}


class BPETokenizer:
    """Byte-level BPE with CLIP's vocabulary; ``encode``/``decode`` between text and token ids.

    Args:
        vocab_file: gzip merge list (default: the packaged ``bpe_simple_vocab_16e6.txt.gz``).
    """

    def __init__(self, vocab_file: str | Path | None = None) -> None:
        path = Path(vocab_file) if vocab_file is not None else VOCAB_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"BPE merge list not found: {path} (it ships with the package as "
                "tats/gpt/bpe_simple_vocab_16e6.txt.gz; reinstall tats or pass vocab_file=)"
            )
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]  # line 0 is a version header
        if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{path}: expected {N_MERGES} merges of two symbols after the header line")

        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        assert len(vocab) == VOCAB_SIZE, len(vocab)
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = dict(enumerate(vocab))
        self.merge_rank: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        # Word -> BPE result. Special tokens are pre-seeded so they stay whole.
        self._cache: dict[str, str] = {SOT: SOT, EOT: EOT}
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, token: str) -> str:
        """Apply the merges to one pre-token (already mapped to byte symbols); returns the final
        symbols joined by spaces, the last one carrying ``</w>``."""
        if token in self._cache:
            return self._cache[token]
        word: tuple[str, ...] = tuple(token[:-1]) + (token[-1] + END_OF_WORD,)
        while len(word) > 1:
            # Merge the pair that was learned first (lowest rank) everywhere it occurs.
            best = min(_pairs(word), key=lambda p: self.merge_rank.get(p, float("inf")))
            if best not in self.merge_rank:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        out = " ".join(word)
        self._cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` after :func:`clean_text`, without start/end tokens."""
        ids: list[int] = []
        for piece in _WORD_PATTERN.findall(clean_text(text)):
            symbols = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(symbols).split(" "))
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ``ids``; each ``</w>`` becomes a space, so words come back space-separated
        (punctuation too: "a, b" -> "a , b"); the trailing space is stripped. Special tokens decode
        to their names; padding zeros must be removed by the caller (see :func:`decode_batch`).
        Invalid UTF-8 is replaced by U+FFFD."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        symbols = "".join(self.decoder[int(i)] for i in ids)
        data = bytearray(self.byte_decoder[c] for c in symbols)
        # "</w>" is spelled with byte symbols ('<', '/', 'w', '>') so it survives the byte mapping;
        # it marks the end of a word, i.e. where the (dropped) space was.
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ").strip()


@lru_cache(maxsize=1)
def default_tokenizer() -> BPETokenizer:
    """The packaged tokenizer, built once per process (loading the merges takes ~0.3 s)."""
    return BPETokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = True) -> torch.Tensor:
    """Token ids for a batch of texts, CLIP layout: ``[SOT, ids..., EOT, 0, 0, ...]``.

    Args:
        texts: one string or a list of B strings.
        context_length: L, the length of every row.
        truncate: cut over-long texts to L tokens keeping EOT as the last one; when False an
            over-long text raises ``ValueError``.

    Returns:
        LongTensor (B, L), zero padded.
    """
    if isinstance(texts, str):
        texts = [texts]
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
    tok = default_tokenizer()
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [tok.sot_id, *tok.encode(text), tok.eot_id]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(
                    f"text {text[:40]!r}... has {len(ids)} tokens with start/end, more than "
                    f"context_length={context_length}; pass truncate=True or a larger context_length"
                )
            ids = ids[:context_length]
            ids[-1] = tok.eot_id
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def decode_batch(tokens: torch.Tensor) -> list[str]:
    """Inverse of :func:`tokenize` for a (B, L) tensor: drops SOT, stops at EOT, ignores padding."""
    tok = default_tokenizer()
    texts = []
    for row in tokens.tolist():
        ids = [i for i in row if i != tok.sot_id]
        if tok.eot_id in ids:
            ids = ids[: ids.index(tok.eot_id)]
        texts.append(tok.decode(ids))
    return texts
