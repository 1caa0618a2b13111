"""Load a transformer checkpoint (the release's or ours) with its frozen VQGAN(s).

Release files: the training flags in ``hyper_parameters["args"]`` (a Namespace whose ``vqvae`` path
points at the author's machine and is ignored), the GPT under ``transformer.``, the video VQGAN under
``first_stage_model.``, an audio VQGAN under ``cond_stage_model.``. Ours (:mod:`tats.gpt.lightning`):
``hyper_parameters["config"]`` (a :class:`GPTConfig` dict), optional ``vqgan_config`` /
``cond_vqgan_config``, the VQGAN under ``vqgan.``; ``hyper_parameters["objective"] = "masked"`` marks
the masked-token model (:class:`tats.gpt.masked.MaskedTransformer`), files without it hold a GPT.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Union

import torch
import torch.nn as nn

from tats.gpt.config import TEXT_VOCAB_SIZE, GPTConfig, kept_latent_frames
from tats.gpt.model import GPT
from tats.gpt.video_transformer import VideoTransformer
from tats.io.checkpoint import CheckpointError, expect_kind, hparams_dict, load_checkpoint, strip_prefix
from tats.io.registry import resolve_checkpoint

CkptLike = Union[str, os.PathLike, Mapping[str, Any]]

# The release's --cond_stage_key values -> our cond_type.
_COND_KEYS = {"label": "label", "text": "text", "stft": "audio"}


def _n_down_blocks(vq_sd: Mapping[str, torch.Tensor]) -> int:
    return len({k.split(".")[2] for k in vq_sd if k.startswith("encoder.conv_blocks.")})


def guess_downsample(
    vq_sd: Mapping[str, torch.Tensor], sequence_length: int, resolution: int, n_latent_tokens: int, s: int = 0
) -> tuple[int, int, int]:
    """The VQGAN downsample ``(dt, dh, dh)`` that yields ``n_latent_tokens`` codes per clip.

    Strides are not stored in a state dict, and the release's transformer Namespace has no
    ``downsample`` flag; the encoder's depth gives ``max(log2 d)`` and the transformer's block size
    gives the number of codes. Among the candidates, fully downsampled space is preferred.
    """
    n = _n_down_blocks(vq_sd)
    full = 2**n
    candidates = [(full, full)] + [(2**a, full) for a in range(n)] + [(full, 2**b) for b in range(n)]
    for dt, dh in candidates:
        if sequence_length % dt or resolution % dh:
            continue
        t = sequence_length // dt
        t = kept_latent_frames(t, s)
        if t * (resolution // dh) ** 2 == n_latent_tokens:
            return dt, dh, dh
    raise CheckpointError(
        f"cannot tell the VQGAN's downsample factors: no (dt, dh, dh) with max {full} gives "
        f"{n_latent_tokens} codes for {sequence_length} frames at {resolution}px; pass vqgan_ckpt="
    )


def _vqgan_from_weights(vq_sd: dict, downsample: Sequence[int] | None, extra: Mapping[str, Any]) -> nn.Module:
    from tats.vqgan.config import VQGANConfig
    from tats.vqgan.load import infer_vqgan_config, vqgan_from_state_dict

    known = {f.name for f in dataclasses.fields(VQGANConfig)} - {"downsample"}
    overrides = {k: v for k, v in extra.items() if k in known and v is not None}
    cfg = infer_vqgan_config(vq_sd, downsample=tuple(downsample) if downsample else None, **overrides)
    return vqgan_from_state_dict(vq_sd, cfg)


def release_gpt_config(
    hp: Mapping[str, Any],
    t_sd: Mapping[str, torch.Tensor],
    n_codes: int | None,
    latent_shape: Sequence[int] | None,
    n_audio_codes: int | None = None,
) -> GPTConfig:
    """A :class:`GPTConfig` from the release's flattened Namespace and the ``transformer.`` weights.

    Sizes come from the weights (vocab, block, width, depth); ``n_head`` and the conditioning
    from the flags. ``latent_shape=None`` assumes one condition token (label/unconditional), so
    ``t*h*w = block_size``, with the grid left as ``(block_size, 1, 1)``.
    """
    vocab, n_embd = t_sd["tok_emb.weight"].shape
    block_size = t_sd["pos_emb"].shape[1]
    n_layer = len({k.split(".")[1] for k in t_sd if k.startswith("blocks.")})
    if "n_head" not in hp:
        raise CheckpointError("the transformer checkpoint's hyper_parameters lack n_head")
    cond_type = "none" if hp.get("unconditional") else _COND_KEYS.get(hp.get("cond_stage_key") or "label")
    if cond_type is None:
        raise CheckpointError(
            f"unknown cond_stage_key {hp.get('cond_stage_key')!r}; expected label, text or stft"
        )
    n_cond_vocab = {
        "none": 0,
        "label": hp.get("class_cond_dim") or (vocab - n_codes if n_codes else 0),
        "text": TEXT_VOCAB_SIZE,
        "audio": n_audio_codes or 0,
    }[cond_type]
    if n_codes is None:
        n_codes = vocab - n_cond_vocab
    if latent_shape is None:
        latent_shape = (block_size, 1, 1)
    n_cond_tokens = 1 if cond_type in ("none", "label") else block_size + 1 - math.prod(latent_shape)
    if n_cond_tokens < 1:
        raise CheckpointError(f"latent grid {tuple(latent_shape)} does not fit the block size {block_size}")
    return GPTConfig(
        vocab_size=vocab,
        block_size=block_size,
        n_layer=n_layer,
        n_head=int(hp["n_head"]),
        n_embd=n_embd,
        n_unmasked=int(hp.get("n_unmasked") or 0),
        cond_type=cond_type,
        n_cond_vocab=int(n_cond_vocab),
        n_cond_tokens=int(n_cond_tokens),
        n_codes=int(n_codes),
        latent_shape=tuple(latent_shape),
        sample_every_n_latent_frames=int(hp.get("sample_every_n_latent_frames") or 0),
    )


def gpt_from_state_dict(t_sd: Mapping[str, torch.Tensor], config: GPTConfig) -> GPT:
    """Build a :class:`GPT` and load ``t_sd`` (keys without the ``transformer.`` prefix) strictly.

    The stored ``attn.mask`` buffers are loaded as they are and decide the attention kind.
    """
    if "vtokens_pos_emb" in t_sd:
        raise CheckpointError(
            "this transformer was trained with --vtokens_pos on cropped token windows: each forward needs "
            "the crop's position in the token grid, which the samplers here do not take (train without "
            "--vtokens_pos to sample)"
        )
    gpt = GPT(config)
    result = gpt.load_state_dict(dict(t_sd), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"transformer weights do not match {config}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return gpt.eval()


def load_transformer(
    gpt_ckpt: CkptLike,
    vqgan_ckpt: CkptLike | None = None,
    device: Union[str, torch.device] = "cpu",
    with_vqgan: bool = True,
) -> VideoTransformer:
    """Load a transformer checkpoint (release or ours) -> :class:`VideoTransformer` in eval mode.

    Args:
        gpt_ckpt: path to the transformer checkpoint, a published model's name (``"ucf101-base"``,
            downloaded once and cached, see :mod:`tats.io.registry`), or the loaded dict.
        vqgan_ckpt: a VQGAN checkpoint (path, name such as ``"ucf101"``, or dict) that replaces the one
            stored inside ``gpt_ckpt``.
        device: where to put the models.
        with_vqgan: False skips the VQGAN(s) (the transformer alone; ``latent_shape`` then comes
            from the block size for release files).
    """
    gpt_ckpt = resolve_checkpoint(gpt_ckpt, "transformer")  # published names: their cached files
    vqgan_ckpt = resolve_checkpoint(vqgan_ckpt, "vqgan")
    path = "<checkpoint dict>" if isinstance(gpt_ckpt, Mapping) else str(gpt_ckpt)
    ckpt = gpt_ckpt if isinstance(gpt_ckpt, Mapping) else load_checkpoint(gpt_ckpt)
    expect_kind(ckpt, "transformer", path)
    sd = ckpt["state_dict"]
    hp = hparams_dict(ckpt)
    t_sd = strip_prefix(sd, "transformer.")
    vq_sd = strip_prefix(sd, "first_stage_model.") or strip_prefix(sd, "vqgan.")
    audio_sd = strip_prefix(sd, "cond_stage_model.")

    ours = isinstance(hp.get("config"), Mapping)
    s_every = int(hp.get("sample_every_n_latent_frames") or 0)
    data = {k: int(hp[k]) for k in ("sequence_length", "resolution") if hp.get(k)}
    downsample = None
    one_cond_token = hp.get("unconditional") or (hp.get("cond_stage_key") or "label") == "label"
    if not ours and vq_sd and len(data) == 2 and one_cond_token:
        # one condition token: t*h*w = block_size
        downsample = guess_downsample(
            vq_sd, data["sequence_length"], data["resolution"], t_sd["pos_emb"].shape[1], s_every
        )
    vqgan = cond_vqgan = None
    if with_vqgan:
        if vqgan_ckpt is not None:
            from tats.vqgan.load import load_vqgan

            vqgan = load_vqgan(vqgan_ckpt, device="cpu")
            downsample = tuple(vqgan.config.downsample)
        elif vq_sd:
            if ours and isinstance(hp.get("vqgan_config"), Mapping):
                from tats.vqgan.config import VQGANConfig
                from tats.vqgan.load import vqgan_from_state_dict

                vqgan = vqgan_from_state_dict(vq_sd, VQGANConfig.from_dict(hp["vqgan_config"]))
            else:
                vqgan = _vqgan_from_weights(vq_sd, downsample, data)
            downsample = tuple(vqgan.config.downsample)
        else:
            warnings.warn(
                f"{path} holds no VQGAN weights and no vqgan_ckpt was given: decoding is unavailable",
                stacklevel=2,
            )
        if audio_sd and ours and isinstance(hp.get("cond_vqgan_config"), Mapping):
            from tats.vqgan.config import VQGANConfig
            from tats.vqgan.load import vqgan_from_state_dict

            cond_vqgan = vqgan_from_state_dict(audio_sd, VQGANConfig.from_dict(hp["cond_vqgan_config"]))
        elif audio_sd:
            try:
                cond_vqgan = _vqgan_from_weights(audio_sd, None, {})
            except (ValueError, CheckpointError, RuntimeError) as err:
                warnings.warn(f"{path}: cannot rebuild the audio VQGAN under cond_stage_model. ({err}); "
                              "pass audio codes as cond", stacklevel=2)

    if ours and hp.get("objective", "autoregressive") == "masked":
        from tats.gpt.masked import MaskedConfig, masked_from_state_dict

        masked = masked_from_state_dict(t_sd, MaskedConfig.from_dict(hp["config"]))
        return VideoTransformer(masked, vqgan, cond_vqgan).to(device).eval()
    if ours and hp.get("objective", "autoregressive") != "autoregressive":
        raise CheckpointError(f"{path}: unknown training objective {hp['objective']!r}")
    if ours:
        config = GPTConfig.from_dict(hp["config"])
    else:
        latent_shape = None
        if downsample is not None and len(data) == 2:
            dt, dh, dw = downsample
            t = data["sequence_length"] // dt
            latent_shape = (kept_latent_frames(t, s_every),
                            data["resolution"] // dh, data["resolution"] // dw)
        n_codes = vqgan.config.n_codes if vqgan is not None else (
            vq_sd["codebook.embeddings"].shape[0] if "codebook.embeddings" in vq_sd else None
        )
        n_audio = audio_sd["codebook.embeddings"].shape[0] if "codebook.embeddings" in audio_sd else None
        config = release_gpt_config(hp, t_sd, n_codes, latent_shape, n_audio)
    gpt = gpt_from_state_dict(t_sd, config)
    return VideoTransformer(gpt, vqgan, cond_vqgan).to(device).eval()
