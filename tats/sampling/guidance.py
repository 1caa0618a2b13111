"""Classifier-free guidance (Ho and Salimans 2022) for the GPT and the masked model.

A model trained with condition dropout (``train_transformer.py --cond_drop 0.1``) has a null
condition (:attr:`tats.gpt.config.GPTConfig.null_id`). Guided sampling runs every forward on ``2B``
rows, the ``B`` conditional ones and the same ``B`` with the null condition, in one batched pass, and
draws from ``logits_u + s * (logits_c - logits_u)`` (:func:`guide_logits`). Scale ``s = 1`` is the
unguided sampler, exactly: the samplers then never double the batch, and :func:`guide_logits` returns
the conditional logits as they are. ``s > 1`` trades diversity for fidelity to the condition.
"""

from __future__ import annotations

import torch

from tats.gpt.conditioning import null_cond_tokens

__all__ = ["check_guidance", "guide_logits", "is_guided", "with_null_rows"]


def is_guided(options) -> bool:
    """Whether ``options`` (:class:`tats.sampling.core.SamplingOptions`) asks for guidance."""
    return float(options.cfg_scale) != 1.0


def check_guidance(options, config) -> None:
    """``ValueError`` unless the model can be guided as ``options`` ask (a null condition; the eager
    token loop: the compiled decoder has no guided step)."""
    if not is_guided(options):
        return
    if not config.null_cond:
        raise ValueError(f"cfg_scale={options.cfg_scale} needs a model trained with condition dropout "
                         "(train_transformer.py --cond_drop 0.1); this one has no null condition")
    if options.compile:
        raise ValueError("classifier-free guidance runs in the eager token loop: compile=True (--compile) "
                         "has no guided step yet; drop --compile or use cfg_scale=1")


def with_null_rows(ids: torch.Tensor, config) -> torch.Tensor:
    """``ids (B, S)`` (condition ids first) -> ``(2B, S)``: the rows as given, then the same rows with
    the null condition in place of theirs (the unconditional half of a guided batch)."""
    uncond = ids.clone()
    uncond[:, : config.n_cond_tokens] = null_cond_tokens(config, ids.shape[0], ids.device)
    return torch.cat([ids, uncond], dim=0)


def guide_logits(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """``logits (2B, ...)``, conditional rows then unconditional ones -> guided ``(B, ...)``:
    ``u + scale * (c - u)``. Scale 1 returns the conditional logits themselves (bit for bit)."""
    cond, uncond = logits.chunk(2, dim=0)
    if float(scale) == 1.0:
        return cond
    return uncond + scale * (cond - uncond)
