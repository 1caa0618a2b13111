"""``--vtokens_pos``: the crop's cells of the full-grid embedding are added to the inputs at positions
0..L-1, as the release's GPT adds them to its position embeddings (checked against a GPT whose own
``pos_emb`` holds that sum, for each clip's box)."""

from __future__ import annotations

import copy

import pytest
import torch

from tats.gpt.config import GPTConfig
from tats.gpt.crop_positions import CropPositions
from tats.gpt.model import GPT


def test_crop_embedding_is_added_at_the_input_positions():
    torch.manual_seed(0)
    # clips of 2 latent frames x 2 x 2 crops of a (2, 4, 4) grid; 1 start token + 8 codes - 1 = 8 inputs
    cfg = GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, n_codes=20,
                    latent_shape=(2, 2, 2))
    gpt = GPT(cfg).eval()
    plain = copy.deepcopy(gpt)
    crops = CropPositions(gpt, (2, 4, 4))
    assert gpt.vtokens_pos_emb.shape == (1, 2, 4, 4, 8) and not gpt.vtokens_pos_emb.any()  # zeros at start
    with torch.no_grad():
        gpt.vtokens_pos_emb.normal_()
    idx = torch.randint(0, 20, (2, 8))
    boxes = torch.tensor([[0, 2, 1, 3], [2, 4, 2, 4]])  # [y0, y1, x0, x1]
    with torch.no_grad(), crops.boxes_for(boxes):
        out = gpt(idx)
    for b, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        cells = gpt.vtokens_pos_emb[0, :, y0:y1, x0:x1].reshape(-1, 8)  # (t, h, w) order: 8 cells
        ref = copy.deepcopy(plain)
        with torch.no_grad():
            ref.pos_emb[0, :8] += cells
            assert torch.allclose(out[b], ref(idx[b : b + 1])[0], atol=1e-6)
    with pytest.raises(RuntimeError, match="needs the crop boxes"):
        gpt(idx)
    with pytest.raises(ValueError, match="cover 8 grid cells but the input has 7"), crops.boxes_for(boxes):
        gpt(idx[:, :7])
