"""The masked-token model: MaskGIT's cosine masking schedule, the bidirectional transformer, its loss,
condition dropout, and checkpoints that load without flags (tats.gpt.masked, tats.gpt.masked_lightning)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tats.gpt.conditioning import drop_condition, null_cond_tokens
from tats.gpt.load import load_transformer
from tats.gpt.masked import MaskedConfig, MaskedTransformer, cosine_schedule, training_mask
from tats.io.checkpoint import load_checkpoint
from tests.numerics import assert_close_to_scale
from tests.tiny_models import N_CLASSES, N_CODES, gpt_config, save_transformer


def _config(**kw) -> MaskedConfig:
    return gpt_config("label", objective="masked", **kw)


# ------------------------------------------------------------------------------------- the schedule
def test_cosine_schedule_values():
    assert cosine_schedule(0.0) == 1.0 and abs(cosine_schedule(1.0)) < 1e-15
    assert cosine_schedule(1 / 3) == pytest.approx(math.sqrt(3) / 2)  # cos(pi/6)
    assert cosine_schedule(0.5) == pytest.approx(math.sqrt(0.5))
    r = torch.linspace(0, 1, 11)
    assert torch.all(cosine_schedule(r)[1:] < cosine_schedule(r)[:-1])  # strictly decreasing


def test_training_mask_follows_the_cosine_distribution():
    # n_masked = ceil(n cos(pi/2 u)), u ~ U[0,1): P(n_masked <= m) = 1 - (2/pi) arccos(m/n), and
    # E[n_masked] = sum_{m=1..n} P(n_masked >= m) = sum_{m=0..n-1} (2/pi) arccos(m/n).
    n, draws = 16, 20000
    mask = training_mask(draws, (4, 2, 2), generator=torch.Generator().manual_seed(0))
    counts = mask.sum(1)
    assert counts.min() >= 1 and counts.max() <= n
    for m in range(1, n):
        expected = 1 - 2 / math.pi * math.acos(m / n)
        assert (counts <= m).float().mean().item() == pytest.approx(expected, abs=0.015), m
    mean = sum(2 / math.pi * math.acos(m / n) for m in range(n))
    sem = counts.float().std().item() / math.sqrt(draws)
    assert abs(counts.float().mean().item() - mean) < 4 * sem
    # every position is equally likely to be masked
    share = mask.float().mean(0)  # (n,) per position; standard error about 0.0034
    assert torch.all((share - mean / n).abs() < 0.015), share


def test_training_mask_gives_whole_first_frames():
    t, h, w = 4, 2, 2
    mask = training_mask(6000, (t, h, w), frame_cond_prob=1.0, generator=torch.Generator().manual_seed(1))
    frames = mask.view(-1, t, h * w).any(-1)  # (B, t): frames with a masked code
    first = frames.float().argmax(1)  # the first frame with a mask = the number of given frames
    assert torch.all(first >= 1)  # at least one frame given, whole
    for k in range(1, t):  # k ~ U{1 .. t-1}
        assert (first == k).float().mean().item() == pytest.approx(1 / (t - 1), abs=0.03)
    given = torch.arange(t)[None] < first[:, None]
    assert not frames[given].any()  # nothing masked before the first masked frame
    mixed = training_mask(6000, (t, h, w), frame_cond_prob=0.5, generator=torch.Generator().manual_seed(2))
    share = (~mixed.view(-1, t, h * w)[:, 0].any(-1)).float().mean().item()
    # frame 0 whole: the prefix task (1/2), or by chance in the plain one (rare: cos(pi u/2) * 16 <= 12)
    assert 0.5 <= share < 0.75


# ------------------------------------------------------------------------------------------ the model
def test_masked_model_is_bidirectional_and_heads_only_where_asked():
    torch.manual_seed(0)
    config = _config(n_layer=2, n_embd=32)
    model = MaskedTransformer(config).eval()
    S = config.block_size
    assert S == 1 + 16 and config.mask_id == config.vocab_size == N_CODES + N_CLASSES
    idx = torch.randint(0, config.vocab_size + 1, (3, S))
    logits = model(idx)
    assert logits.shape == (3, 16, N_CODES)
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % config.vocab_size
    # the last code is seen by the first position (a GPT's first position could not see it)
    assert not torch.allclose(model(changed)[:, 0], logits[:, 0])
    pos = torch.tensor([[0, 5], [3, 15], [7, 8]])
    picked = model(idx, positions=pos)
    assert_close_to_scale(picked, logits.gather(1, pos[..., None].expand(-1, -1, N_CODES)), max_ulps=64)
    with pytest.raises(ValueError, match="whole sequences"):
        model(idx[:, :-1])


def test_masked_config_checks_its_block():
    with pytest.raises(ValueError, match="block_size"):
        MaskedConfig(**{**_config().to_dict(), "block_size": 16, "latent_shape": (4, 2, 2)})


def test_loss_scores_the_masked_codes_only():
    from tats.gpt.masked_lightning import MaskedTransformerModule
    from tests.tiny_models import build_vqgan

    torch.manual_seed(0)
    module = MaskedTransformerModule.from_vqgan(_config(), build_vqgan())
    codes = torch.randint(0, N_CODES, (5, 4, 2, 2))
    batch = dict(codes=codes, label=torch.arange(5))
    loss, n = module.loss(batch, torch.Generator().manual_seed(3))
    # the same masks by hand: inputs with [MASK] there, cross-entropy of those codes
    mask = training_mask(5, (4, 2, 2), 0.5, torch.Generator().manual_seed(3))
    idx = torch.cat([torch.arange(5)[:, None], codes.flatten(1) + N_CLASSES], 1)
    idx[:, 1:][mask] = module.config.mask_id
    logits = module.transformer(idx)
    expected = F.cross_entropy(logits[mask], codes.flatten(1)[mask])
    assert n == int(mask.sum()) and torch.equal(loss, expected)


def test_condition_dropout_uses_the_null_id():
    config = gpt_config("label", null_cond=True)
    assert config.vocab_size == N_CODES + N_CLASSES + 1 and config.null_id == N_CODES + N_CLASSES
    cond = torch.arange(4000)[:, None] % N_CLASSES
    dropped = drop_condition(config, cond, 0.1, torch.Generator().manual_seed(0))
    is_null = dropped[:, 0] == config.null_id
    assert torch.equal(dropped[~is_null], cond[~is_null])  # the others keep their label
    assert is_null.float().mean().item() == pytest.approx(0.1, abs=0.015)
    assert drop_condition(config, cond, 0.0) is cond
    text = gpt_config("text", null_cond=True)
    assert torch.equal(null_cond_tokens(text, 2), torch.full((2, text.n_cond_tokens), text.null_id))
    with pytest.raises(ValueError, match="no null condition"):
        _ = gpt_config("label").null_id
    with pytest.raises(ValueError, match="null_cond"):
        gpt_config("none", null_cond=True)


# ------------------------------------------------------------------------------------- save -> load
@pytest.mark.parametrize("kind", ["label", "text"])
def test_masked_checkpoint_round_trip(tmp_path, kind):
    from tats.gpt.masked_lightning import MaskedTransformerModule

    path = save_transformer(tmp_path / "masked.ckpt", kind, objective="masked", null_cond=True)
    ckpt = load_checkpoint(path)
    assert ckpt["hyper_parameters"]["objective"] == "masked"
    model = load_transformer(path)  # no flags
    assert model.objective == "masked" and isinstance(model.transformer, MaskedTransformer)
    assert isinstance(model.config, MaskedConfig) and model.config.null_cond
    assert model.vqgan is not None
    module = MaskedTransformerModule.load_from_checkpoint(path)  # Lightning's own loader, same weights
    S = model.config.block_size
    idx = torch.randint(0, model.config.vocab_size + 1, (2, S))
    with torch.no_grad():
        assert torch.equal(model.transformer(idx), module.transformer.eval()(idx))
    sd = {k[len("transformer."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("transformer.")}
    assert all(torch.equal(v, model.transformer.state_dict()[k]) for k, v in sd.items())


def test_guidance_gpt_checkpoint_round_trip(tmp_path):
    path = save_transformer(tmp_path / "gpt.ckpt", "label", null_cond=True)
    assert load_checkpoint(path)["hyper_parameters"]["cond_drop"] == 0.1
    model = load_transformer(path)
    assert model.objective == "autoregressive" and model.config.null_cond
    assert model.transformer.tok_emb.weight.shape[0] == N_CODES + N_CLASSES + 1
