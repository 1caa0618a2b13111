"""Loading VQGANs from the release's checkpoints and from ours.

Accepted files (all read with :func:`tats.io.checkpoint.load_checkpoint`, weights only):

- the release's Lightning-1.5 VQGAN files: top-level ``encoder.``/``decoder.``/``pre_vq_conv.``/
  ``post_vq_conv.``/``codebook.`` keys, flags in ``hyper_parameters["args"]`` (a Namespace);
- ours: the same keys under ``vqgan.``, the config as ``hyper_parameters["config"]``;
- a transformer checkpoint's frozen VQGAN under ``first_stage_model.`` via :func:`load_first_stage`
  (its strides are not stored, see :func:`infer_vqgan_config`).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from tats.io.checkpoint import CheckpointError, expect_kind, hparams_dict, load_checkpoint, strip_prefix
from tats.io.registry import resolve_checkpoint
from tats.vqgan.config import VQGANConfig
from tats.vqgan.model import VQGAN

VQGAN_PREFIXES = ("encoder.", "decoder.", "pre_vq_conv.", "post_vq_conv.", "codebook.")


def infer_vqgan_config(
    state_dict: Mapping[str, torch.Tensor], downsample: tuple[int, int, int] | None = None, **overrides: Any
) -> VQGANConfig:
    """Read a :class:`VQGANConfig` off the weights (release key names, no prefix).

    Shapes give ``n_codes``, ``embedding_dim``, ``n_hiddens``, ``image_channels``, ``norm_type``
    (``running_mean`` present -> batch) and the number of down blocks ``n``. The per-dim strides are
    not stored, so ``downsample`` must be passed when it is not isotropic; without it
    ``(2**n,)*3`` is assumed with a warning. ``overrides`` (e.g. ``padding_type``, ``resolution``,
    ``sequence_length``) are applied last. Raises ``ValueError`` when the weights are not a VQGAN or
    ``downsample`` does not match the block count.
    """
    try:
        n_codes, embedding_dim = state_dict["codebook.embeddings"].shape
        n_hiddens, image_channels = state_dict["encoder.conv_first.conv.weight"].shape[:2]
    except KeyError as err:
        raise ValueError(f"not a VQGAN state dict: missing {err.args[0]!r}") from None
    blocks = {int(m.group(1)) for k in state_dict
              if (m := re.match(r"encoder\.conv_blocks\.(\d+)\.down\.conv\.weight$", k))}
    n_blocks = len(blocks)
    if downsample is None:
        downsample = (2**n_blocks,) * 3
        warnings.warn(
            f"the checkpoint does not store the VQGAN's per-dimension downsampling; assuming "
            f"{list(downsample)} from its {n_blocks} down blocks. Pass downsample=(dt, dh, dw) "
            "(--downsample) if it was trained with another one.",
            stacklevel=2,
        )
    downsample = tuple(int(d) for d in downsample)
    fields: dict[str, Any] = dict(
        n_codes=int(n_codes), embedding_dim=int(embedding_dim), n_hiddens=int(n_hiddens),
        image_channels=int(image_channels), downsample=downsample,
        norm_type="batch" if "encoder.final_block.0.running_mean" in state_dict else "group",
    )
    if "image_discriminator.model0.0.weight" in state_dict:
        fields["disc_channels"] = int(state_dict["image_discriminator.model0.0.weight"].shape[0])
        fields["disc_layers"] = sum(1 for k in state_dict
                                    if re.match(r"image_discriminator\.model\d+\.0\.weight$", k)) - 2
    fields.update(overrides)
    # pick a clip size the strides divide (the weights do not say which one was used)
    fields.setdefault("sequence_length", max(16, downsample[0]))
    fields.setdefault("resolution", max(64, downsample[1], downsample[2]))
    config = VQGANConfig.from_dict(fields)
    if config.n_down_blocks != n_blocks:
        raise ValueError(
            f"downsample {list(downsample)} implies {config.n_down_blocks} down blocks but the weights "
            f"have {n_blocks}"
        )
    return config


def vqgan_from_state_dict(state_dict: Mapping[str, torch.Tensor], config: VQGANConfig) -> VQGAN:
    """Build a :class:`VQGAN` from ``config`` and load the weights (release key names:
    ``encoder.``, ``decoder.``, ``pre_vq_conv.``, ``post_vq_conv.``, ``codebook.``; other keys such as
    discriminators or LPIPS are ignored). Missing or mis-shaped keys raise ``ValueError``.
    Returns the model in eval mode on the tensors' device.
    """
    sd = {k: v for k, v in state_dict.items() if k.startswith(VQGAN_PREFIXES)}
    model = VQGAN(config)
    try:
        # strict: an absent "codebook.initialized" is filled in by Codebook (release files lack it)
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the weights do not fit the VQGAN config {config.to_dict()}: {err}") from None
    return model.eval()


def _read(path_or_ckpt: str | os.PathLike | Mapping) -> tuple[str, Mapping]:
    """(name for messages, checkpoint dict) from a path (read weights-only) or a loaded dict."""
    if isinstance(path_or_ckpt, (str, os.PathLike)):
        return str(path_or_ckpt), load_checkpoint(path_or_ckpt)
    if not isinstance(path_or_ckpt, Mapping):
        raise TypeError(f"expected a checkpoint path or dict, got {type(path_or_ckpt).__name__}")
    return "checkpoint", path_or_ckpt


def _config_from_checkpoint(ckpt: Mapping, sd: Mapping[str, torch.Tensor], where: str) -> VQGANConfig:
    hp = ckpt.get("hyper_parameters") or {}
    if isinstance(hp.get("config"), Mapping):  # ours
        return VQGANConfig.from_dict(hp["config"])
    flags = hparams_dict(ckpt)
    if "downsample" in flags and "n_codes" in flags:  # the release's Namespace of flags
        norm = "batch" if "encoder.final_block.0.running_mean" in sd else "group"
        if flags.get("norm_type", "group") != norm:
            # the weights decide: BatchNorm stores running statistics, GroupNorm does not
            warnings.warn(f"{where}: flags say norm_type {flags.get('norm_type', 'group')!r} but the weights "
                          f"are {norm!r} norm; using {norm!r}", stacklevel=3)
            flags = {**flags, "norm_type": norm}
        try:
            return VQGANConfig.from_dict(flags)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: its VQGAN flags are not usable: {err}") from None
    keep = {k: flags[k] for k in ("padding_type", "sequence_length", "resolution") if k in flags}
    return infer_vqgan_config(sd, flags.get("downsample"), **keep)


def load_vqgan(path_or_ckpt: str | os.PathLike | Mapping, device: str | torch.device = "cpu") -> VQGAN:
    """Load a VQGAN checkpoint (the release's or ours) and return the model in eval mode on ``device``.

    ``path_or_ckpt`` is a file path, a published model's name (``"ucf101"``: downloaded once, verified
    and cached, see :mod:`tats.io.registry`) or an already loaded checkpoint dict. A transformer checkpoint is
    refused with a message saying so (use :func:`load_first_stage` for the VQGAN inside it).
    """
    path_or_ckpt = resolve_checkpoint(path_or_ckpt, "vqgan")  # a published name: its cached file
    where, ckpt = _read(path_or_ckpt)
    expect_kind(ckpt, "vqgan", where)
    sd = ckpt["state_dict"]
    if any(k.startswith("vqgan.encoder.") for k in sd):  # ours: VQGANModule.vqgan
        sd = strip_prefix(sd, "vqgan.")
    config = _config_from_checkpoint(ckpt, sd, where)
    try:
        model = vqgan_from_state_dict(sd, config)
    except ValueError as err:
        raise CheckpointError(f"{where}: {err}") from None
    return model.to(device)


def load_first_stage(
    path_or_ckpt: str | os.PathLike | Mapping,
    device: str | torch.device = "cpu",
    downsample: tuple[int, int, int] | None = None,
    prefix: str = "first_stage_model.",
) -> VQGAN:
    """The frozen VQGAN stored inside a transformer checkpoint under ``prefix``, eval mode on
    ``device``. Its config is read off the weights (:func:`infer_vqgan_config`); pass ``downsample``
    for a non-isotropic VQGAN. Prefer the user's own ``--vqgan_ckpt`` when given: it stores its flags.
    """
    where, ckpt = _read(resolve_checkpoint(path_or_ckpt, "transformer"))
    sd = strip_prefix(ckpt.get("state_dict", {}), prefix)
    if not sd:
        raise CheckpointError(f"{where} has no weights under {prefix!r}: not a transformer checkpoint "
                              "with an embedded VQGAN")
    flags = hparams_dict(ckpt)
    keep = {k: flags[k] for k in ("sequence_length", "resolution") if k in flags}
    try:
        config = infer_vqgan_config(sd, downsample, **keep)
        model = vqgan_from_state_dict(sd, config)
    except ValueError as err:
        raise CheckpointError(f"{where}: the VQGAN under {prefix!r}: {err}") from None
    return model.to(device)
