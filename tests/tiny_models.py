"""Tiny, deterministic checkpoints for tests: VQGANs and transformers in the on-disk layouts users have.

Every builder constructs the real modules (``VQGAN``, ``TransformerModule``) from a seeded generator
and saves their state, so the files have exactly the layout the loaders read:

- :func:`save_vqgan` (``layout="ours"``): ``state_dict`` with ``vqgan.*`` keys and
  ``hyper_parameters["config"]`` (the VQGANConfig dict), as :class:`tats.vqgan.lightning.VQGANModule`
  writes (the discriminators and LPIPS are left out: the loaders ignore them).
- :func:`save_vqgan` (``layout="release"``): the release's Lightning-1.5 file (the release,
  "Checkpoint files"): top-level ``encoder.``/``decoder.``/``pre_vq_conv.``/``post_vq_conv.``/
  ``codebook.`` keys (no ``codebook.initialized``) and ``hyper_parameters = {"args": Namespace}``.
- :func:`save_transformer`: ours, as :class:`tats.gpt.lightning.TransformerModule` writes it:
  ``transformer.*``, ``vqgan.*`` (and ``cond_stage_model.*`` for audio), ``hyper_parameters`` with
  ``config`` / ``vqgan_config`` / ``cond_vqgan_config`` dicts. Kinds: ``"label"``, ``"none"``
  (unconditional), ``"text"``, ``"audio"``, ``"ar"`` (sparse AR model of the hierarchical pair,
  ``sample_every_n_latent_frames = 2``) and ``"interp"`` (its ``n_unmasked`` interpolation model).

Sizes (chosen so that a whole sampling run takes well under a second on one CPU thread):
video clips are ``(3, 8, 16, 16)`` (T=8 frames of 16x16, SSIM's 11-pixel window fits), the VQGAN
downsamples by ``(2, 8, 8)`` to a ``(4, 2, 2)`` grid of 16 codes, the transformers have 1 layer of
width 16. Weights are drawn with a fixed seed and scaled up, so different codes decode to visibly
different pixels and greedy decoding is not degenerate.

Usage::

    from tests.tiny_models import save_vqgan, save_transformer
    vq = save_vqgan(tmp_path / "vqgan.ckpt")
    gpt = save_transformer(tmp_path / "gpt.ckpt", "label")
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tats.gpt.config import TEXT_VOCAB_SIZE, GPTConfig
from tats.io.checkpoint import save_checkpoint
from tats.vqgan.config import VQGANConfig
from tats.vqgan.model import VQGAN

#: Clip the tiny VQGAN is built for: (C, T, H, W).
CLIP_SHAPE = (3, 8, 16, 16)
#: Codes of the tiny VQGAN.
N_CODES = 16
#: Classes of the label-conditional tiny transformer: those of the demo moving digits (10 digits x 2
#: motions), so it can be conditioned on the demo data's labels.
N_CLASSES = 20
#: Text tokens of the text-conditional tiny transformer.
N_TEXT_TOKENS = 6
#: Every s-th latent frame of the sparse AR model / frames filled by the interpolation model.
HIER_STRIDE = 2

KINDS = ("label", "none", "text", "audio", "ar", "interp")


def vqgan_config() -> VQGANConfig:
    """The tiny video VQGAN: 8 frames of 16x16 -> codes (4, 2, 2), batch norm (any width works)."""
    return VQGANConfig(embedding_dim=4, n_codes=N_CODES, n_hiddens=2, downsample=(2, 8, 8), norm_type="batch",
                       sequence_length=CLIP_SHAPE[1], resolution=CLIP_SHAPE[2])


def stft_vqgan_config() -> VQGANConfig:
    """The tiny STFT VQGAN: ``(1, 8, 64, 16)`` features (the release: STFT input ``(B, 1, T, 64, 16)``)
    -> codes (1, 4, 1) = 4 audio tokens."""
    return VQGANConfig(embedding_dim=4, n_codes=8, n_hiddens=2, downsample=(8, 16, 16), image_channels=1,
                       norm_type="batch", sequence_length=8, resolution=16)


def build_vqgan(config: VQGANConfig | None = None, seed: int = 0) -> VQGAN:
    """A VQGAN with seeded random weights (std 0.3, so codes decode to distinct pixels), eval mode."""
    config = config or vqgan_config()
    gen = torch.Generator().manual_seed(seed)
    model = VQGAN(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        if config.quantizer == "vq":  # (FSQ and LFQ have no codebook)
            model.codebook.embeddings.copy_(torch.randn(model.codebook.embeddings.shape, generator=gen))
            model.codebook.z_avg.copy_(model.codebook.embeddings)
            model.codebook.N.fill_(1.0)
            model.codebook.initialized.fill_(True)
    return model.eval()


def release_vqgan_args(config: VQGANConfig) -> argparse.Namespace:
    """The release's training Namespace for ``config``: its flags plus trainer flags it also stored."""
    flags = config.to_dict()
    flags.update(gpus=1, batch_size=2, num_workers=0, max_steps=10, data_path="/author/data",
                 default_root_dir="/author/ckpt", sync_batchnorm=True, progress_bar_refresh_rate=500)
    return argparse.Namespace(**flags)


def _lightning_wrapper(state_dict: dict, hyper_parameters: dict, version: str) -> dict:
    return {"state_dict": state_dict, "hyper_parameters": hyper_parameters, "hparams_name": "kwargs",
            "epoch": 0, "global_step": 10, "pytorch-lightning_version": version, "callbacks": {},
            "optimizer_states": [], "lr_schedulers": []}


def save_vqgan(
    path: str | Path, layout: str = "ours", config: VQGANConfig | None = None, seed: int = 0
) -> Path:
    """Write a tiny VQGAN checkpoint (``layout`` "ours" or "release", see the module docstring)."""
    config = config or vqgan_config()
    model = build_vqgan(config, seed)
    sd = model.state_dict()
    if layout == "ours":
        ours = {f"vqgan.{k}": v for k, v in sd.items()}
        ckpt = _lightning_wrapper(ours, {"config": config.to_dict()}, "2.6.6")
    elif layout == "release":
        sd = {k: v for k, v in sd.items() if k != "codebook.initialized"}  # not in release files
        ckpt = _lightning_wrapper(sd, {"args": release_vqgan_args(config)}, "1.5.4")
    else:
        raise ValueError(f"layout must be 'ours' or 'release', got {layout!r}")
    path = Path(path)
    save_checkpoint(ckpt, path)
    return path


def gpt_config(
    kind: str, n_layer: int = 1, n_embd: int = 16, n_head: int = 2, vq: VQGANConfig | None = None,
    objective: str = "autoregressive", null_cond: bool = False,
) -> GPTConfig:
    """The tiny transformer of ``kind`` (one of :data:`KINDS`) over the latent grid of ``vq``
    (default: the tiny VQGAN's (4, 2, 2) grid). ``objective="masked"``: the masked model's config
    (the whole sequence as its block); ``null_cond``: with the guidance null id in the vocabulary."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    vq = vq or vqgan_config()
    t, h, w = vq.latent_shape
    hw = h * w
    n_cond_vocab, n_cond, cond_type = 0, 1, "none"
    every, n_unmasked = 0, 0
    if kind == "label":
        cond_type, n_cond_vocab = "label", N_CLASSES
    elif kind == "text":
        cond_type, n_cond_vocab, n_cond = "text", TEXT_VOCAB_SIZE, N_TEXT_TOKENS
    elif kind == "audio":
        a = stft_vqgan_config()
        cond_type, n_cond_vocab = "audio", a.n_codes
        n_cond = (vq.sequence_length // a.downsample[0]) * (64 // a.downsample[1]) * (16 // a.downsample[2])
    elif kind == "ar":
        every = HIER_STRIDE
        t = -(-t // every)  # the sparse grid: ceil(t / s) latent frames
    elif kind == "interp":
        t = HIER_STRIDE + 1  # [first, s - 1 missing, last]
        n_unmasked = n_cond + hw - 1  # sees the condition + first frame and the last frame
    if objective == "masked":
        from tats.gpt.masked import MaskedConfig

        return MaskedConfig(
            vocab_size=N_CODES + n_cond_vocab + null_cond, block_size=n_cond + t * hw, n_layer=n_layer,
            n_head=n_head, n_embd=n_embd, cond_type=cond_type, n_cond_vocab=n_cond_vocab,
            n_cond_tokens=n_cond, n_codes=N_CODES, latent_shape=(t, h, w), null_cond=null_cond,
        )
    return GPTConfig(
        vocab_size=N_CODES + n_cond_vocab + null_cond, block_size=n_cond + t * hw - 1, n_layer=n_layer,
        n_head=n_head, n_embd=n_embd, n_unmasked=n_unmasked, cond_type=cond_type, n_cond_vocab=n_cond_vocab,
        n_cond_tokens=n_cond, n_codes=N_CODES, latent_shape=(t, h, w), sample_every_n_latent_frames=every,
        null_cond=null_cond,
    )


def save_transformer(
    path: str | Path,
    kind: str = "label",
    seed: int = 0,
    with_vqgan: bool = True,
    vq: VQGANConfig | None = None,
    objective: str = "autoregressive",
    null_cond: bool = False,
) -> Path:
    """Write a tiny transformer checkpoint in our layout (see the module docstring).

    ``with_vqgan=False`` drops the ``vqgan.*`` weights (a file that needs ``--vqgan_ckpt``; pass the
    file of :func:`save_vqgan` with the same ``seed`` to get the same VQGAN back). ``vq``: another
    video VQGAN config (e.g. larger frames for a memory benchmark); default :func:`vqgan_config`.
    ``objective="masked"``: the masked-token model, as :class:`tats.gpt.masked_lightning.
    MaskedTransformerModule` writes it; ``null_cond``: trained for guidance (``cond_drop`` 0.1).
    """
    from tats.gpt.lightning import TransformerModule
    from tats.gpt.masked_lightning import MaskedTransformerModule

    config = gpt_config(kind, vq=vq, objective=objective, null_cond=null_cond)
    cond_vqgan = build_vqgan(stft_vqgan_config(), seed + 1) if kind == "audio" else None
    gen = torch.Generator().manual_seed(seed + 2)
    module_cls = MaskedTransformerModule if objective == "masked" else TransformerModule
    module = module_cls.from_vqgan(config, build_vqgan(vq, seed=seed), cond_vqgan,
                                   cond_drop=0.1 if null_cond else 0.0)
    with torch.no_grad():  # std 0.5: peaked next-token distributions, so greedy paths are not flat
        for p in module.transformer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    sd = module.state_dict()
    if not with_vqgan:
        sd = {k: v for k, v in sd.items() if not k.startswith("vqgan.")}
    path = Path(path)
    save_checkpoint(_lightning_wrapper(sd, dict(module.hparams), "2.6.6"), path)
    return path
