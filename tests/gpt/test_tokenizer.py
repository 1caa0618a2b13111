"""CLIP BPE tokenizer: vocabulary layout, ids checked against open_clip 3.3.0, round trips, padding."""

from __future__ import annotations

import pytest
import torch

from tats.gpt.tokenizer import (
    EOT_ID,
    SOT_ID,
    VOCAB_SIZE,
    byte_to_unicode,
    clean_text,
    decode_batch,
    default_tokenizer,
    tokenize,
)

# Ids produced by open_clip 3.3.0's SimpleTokenizer on the same merge file (checked once, offline).
KNOWN_IDS = {
    "a photo of a cat": [320, 1125, 539, 320, 2368],
    "Mugen jumps over a gear": [670, 3278, 18911, 962, 320, 4802],
    "digit 7 moves left": [27472, 278, 6880, 1823],
    "Hello, World!": [3306, 267, 1002, 256],
}


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def test_vocabulary_layout(tok):
    assert tok.vocab_size == VOCAB_SIZE == 49408
    assert (tok.sot_id, tok.eot_id) == (SOT_ID, EOT_ID) == (49406, 49407)
    table = byte_to_unicode()
    assert len(set(table.values())) == 256  # reversible
    assert tok.encoder["!"] == 0 and tok.encoder["!</w>"] == 256  # visible bytes come first
    assert table[ord(" ")] == chr(256 + 32)  # space is remapped (33rd non-visible byte)
    assert tok.decoder[512] == "i" + "n"  # first merge "i n"


@pytest.mark.parametrize("text", list(KNOWN_IDS))
def test_known_ids(tok, text):
    assert tok.encode(text) == KNOWN_IDS[text]


@pytest.mark.parametrize(
    "text",
    ["a photo of a cat", "The  Quick\tbrown FOX\n jumps", "café naïve 東京 😀", "zzzqqqxxyy qwertyuiop"],
)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == clean_text(text)


def test_clean_text():
    assert clean_text("  A&amp;amp;B \n\t C  ") == "a&b c"


def test_punctuation_and_digits_split(tok):
    # digits are single pre-tokens; punctuation runs are their own words
    assert tok.decode(tok.encode("Route 66, ok?!")) == "route 6 6 , ok ?!"


def test_special_token_text_stays_whole(tok):
    assert tok.encode("<|endoftext|>") == [EOT_ID]


def test_tokenize_padding_and_truncation():
    out = tokenize(["a photo of a cat", "a cat"], context_length=10)
    assert out.dtype == torch.long and out.shape == (2, 10)
    assert out[0].tolist() == [SOT_ID, 320, 1125, 539, 320, 2368, EOT_ID, 0, 0, 0]
    assert out[1].tolist() == [SOT_ID, 320, 2368, EOT_ID] + [0] * 6
    assert decode_batch(out) == ["a photo of a cat", "a cat"]

    long = tokenize("a photo of a cat", context_length=4)
    assert long.tolist() == [[SOT_ID, 320, 1125, EOT_ID]]  # cut, EOT kept last
    with pytest.raises(ValueError, match="context_length=4"):
        tokenize("a photo of a cat", context_length=4, truncate=False)
    assert tokenize("", context_length=3).tolist() == [[SOT_ID, EOT_ID, 0]]
