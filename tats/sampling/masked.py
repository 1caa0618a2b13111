"""Iterative parallel decoding of a masked-token model (MaskGIT, Chang et al. 2022), short and long.

:func:`masked_decode` fills the ``[MASK]`` codes of one window in ``steps`` forward passes: each pass
draws a code at every masked position as the GPT draws a token, keeps the most confident draws and
masks the others again on a cosine schedule (:func:`remaining_masked`). :func:`sample_long_masked`
slides the GPT's window with it. docs/sampling.md has the rules (confidence, schedule, long videos).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from tats.gpt.conditioning import Cond
from tats.gpt.masked import cosine_schedule
from tats.sampling.core import SamplingOptions, precision
from tats.sampling.filtering import filter_logits, top_k_top_p_probs
from tats.sampling.guidance import check_guidance, guide_logits, is_guided, with_null_rows

__all__ = ["draw_with_confidence", "masked_decode", "remaining_masked", "sample_long_masked",
           "sample_short_masked"]


def remaining_masked(n_masked: int, steps: int) -> list[int]:
    """Codes still masked after each step when ``n_masked`` are masked at the start: the cosine schedule
    ``floor(n * cos(pi/2 * (s+1)/S))``, lowered where needed so that every step fixes at least one code;
    0 after the last step. Fewer than ``steps`` entries when the codes run out first (fewer forwards)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    left, out = n_masked, []
    for s in range(steps):
        if left == 0:
            break
        m = 0 if s == steps - 1 else math.floor(n_masked * cosine_schedule((s + 1) / steps))
        left = max(0, min(m, left - 1))
        out.append(left)
    return out


def _gumbel(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def draw_with_confidence(logits: torch.Tensor, options: SamplingOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """One code per row of ``logits (R, V)``: ``(codes (R,), log-probabilities (R,))`` under the filtered
    distribution the code was drawn from (temperature, top-k, top-p as :func:`sample_next`)."""
    x = logits.float()
    if options.greedy:
        codes = x.argmax(-1)
        return codes, x.log_softmax(-1).gather(-1, codes[:, None]).squeeze(-1)
    if options.temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {options.temperature}")
    x = x / options.temperature
    top_k, top_p = options.top_k, options.top_p
    if options.release_compat and top_k is None:
        top_p = None  # the release's rule: top-p only with top-k
    survivors = top_k_top_p_probs(x, top_k, top_p) if top_k and top_k < x.shape[-1] else None
    if survivors is not None:  # the draw among the k survivors (the same distribution)
        probs, ids = survivors  # (R, k), (R, k)
        choice = torch.multinomial(probs, 1, generator=options.generator)  # (R, 1)
        return ids.gather(-1, choice).squeeze(-1), probs.gather(-1, choice).squeeze(-1).log()
    if top_k or (top_p is not None and top_p < 1.0):
        x = filter_logits(x, top_k, top_p)
    logp = x.log_softmax(-1)  # (R, V)
    codes = torch.multinomial(logp.exp(), 1, generator=options.generator)  # (R, 1)
    return codes.squeeze(-1), logp.gather(-1, codes).squeeze(-1)


def masked_decode(model, ids: torch.Tensor, options: SamplingOptions, progress: bool = False) -> torch.Tensor:
    """Fill the ``[MASK]`` codes of ``ids (B, S)`` (a whole window: condition ids, then shifted codes or
    ``mask_id``) by iterative parallel decoding; returns the filled ids (a new tensor).

    Every row must hold the same number of masked codes (the samplers mask the same frames in all rows).
    """
    config = model.config
    net = model.transformer
    n_cond, mask_id = config.n_cond_tokens, config.mask_id
    B = ids.shape[0]
    ids = ids.clone()
    video = ids[:, n_cond:]  # (B, L), a view: writes reach ids
    unknown = video == mask_id  # (B, L)
    counts = unknown.sum(1)
    n = int(counts[0])
    if n == 0:
        return ids
    if bool((counts != n).any()):
        raise ValueError("every row of a masked window must hold the same number of masked codes")
    guided = is_guided(options)
    pos = unknown.nonzero()[:, 1].view(B, n)  # (B, n) masked video positions, ascending
    schedule = remaining_masked(n, options.steps)
    for s, m in enumerate(tqdm(schedule, desc="masked steps", disable=not progress, leave=False)):
        x = with_null_rows(ids, config) if guided else ids  # (B or 2B, S)
        with precision(ids.device, options.dtype):
            logits = net(x, positions=torch.cat([pos, pos]) if guided else pos).float()  # (B or 2B, k, V)
        if guided:
            logits = guide_logits(logits, options.cfg_scale)  # (B, k, V)
        k = pos.shape[1]
        codes, logp = draw_with_confidence(logits.reshape(B * k, -1), options)
        codes, logp = codes.view(B, k), logp.view(B, k)
        video.scatter_(1, pos, codes + config.n_cond_vocab)  # every draw written; the least sure re-masked
        if m == 0:
            break
        noise_t = options.mask_temperature * (1.0 - (s + 1) / len(schedule))
        confidence = logp if options.greedy or noise_t <= 0 else logp + noise_t * _gumbel(
            logp.shape, options.generator, logp.device)
        pos = pos.gather(1, confidence.argsort(dim=1)[:, :m]).sort(dim=1).values  # (B, m) least confident
        video.scatter_(1, pos, mask_id)
    return ids


def _window(model, batch_size: int, cond_ids: torch.Tensor) -> torch.Tensor:
    """An all-masked window ``(B, block_size)`` after the condition ids."""
    config = model.config
    ids = torch.full((batch_size, config.block_size), config.mask_id, dtype=torch.long,
                     device=cond_ids.device)
    ids[:, : config.n_cond_tokens] = cond_ids
    return ids


def _check(model, options: SamplingOptions) -> None:
    check_guidance(options, model.config)
    if options.compile:
        raise ValueError("compile=True is the GPT's compiled token loop; masked decoding runs eagerly")
    if options.steps < 1:
        raise ValueError(f"steps must be >= 1, got {options.steps}")


@torch.inference_mode()
def sample_short_masked(
    model,
    batch_size: int,
    cond: Cond = None,
    options: SamplingOptions | None = None,
    progress: bool = False,
    prefix_codes: torch.Tensor | None = None,
    return_ids: bool = False,
    **sampling: Any,
) -> torch.Tensor:
    """One training-length clip from a masked model: codes ``(B, t, h, w)`` (or the shifted ids
    ``(B, t*h*w)`` with ``return_ids``); arguments as :func:`tats.sampling.sample_short`.
    ``prefix_codes (B, k, h, w)``: given first latent frames, kept as they are."""
    options = SamplingOptions.of(options, **sampling)
    _check(model, options)
    config = model.config
    device = model.device
    ids = _window(model, batch_size, model.cond_tokens(cond, batch_size, device))
    if prefix_codes is not None:
        known = model.codes_to_ids(prefix_codes.to(device))[:, : config.n_latent_tokens]  # (B, k*h*w)
        ids[:, config.n_cond_tokens : config.n_cond_tokens + known.shape[1]] = known
    ids = masked_decode(model, ids, options, progress)[:, config.n_cond_tokens :]  # (B, t*h*w)
    return ids if return_ids else model.ids_to_codes(ids, config.latent_shape)


@torch.inference_mode()
def sample_long_masked(
    model,
    n_latent_frames: int,
    batch_size: int,
    cond: Cond = None,
    temporal_sample_pos: int = 1,
    options: SamplingOptions | None = None,
    progress: bool = False,
    prefix_codes: torch.Tensor | None = None,
    top_k_init: int | None = None,
    top_p_init: float | None = None,
    return_ids: bool = False,
    sample_resolution: None | int | Sequence[int] = None,
    **sampling: Any,
) -> torch.Tensor:
    """``n_latent_frames`` latent frames from a masked model with the sliding window (docs/sampling.md):
    codes ``(B, n, h, w)``; arguments as :func:`tats.sampling.sample_long` (``top_k_init`` /
    ``top_p_init`` for the first window). ``prefix_codes (B, k, h, w)``: given first latent frames."""
    options = SamplingOptions.of(options, **sampling)
    _check(model, options)
    config = model.config
    t, h, w = config.latent_shape
    hw, n_cond = h * w, config.n_cond_tokens
    p = temporal_sample_pos
    if not 1 <= p < t:
        raise ValueError(f"temporal_sample_pos must lie in [1, {t - 1}] for a model trained on {t} latent "
                         f"frames, got {p}")
    if sample_resolution is not None:
        size = (sample_resolution,) * 2 if isinstance(sample_resolution, int) else tuple(sample_resolution)
        if size != (h, w):
            raise ValueError(f"a masked model samples at its trained latent size {(h, w)}: sample_resolution "
                             f"{size} (the spatial sliding window) is for the GPT")
    device = model.device
    n = n_latent_frames
    cond_ids = model.cond_tokens(cond, batch_size, device)
    frames = torch.full((batch_size, n, hw), config.mask_id, dtype=torch.long, device=device)  # shifted ids
    n_known = 0
    if prefix_codes is not None:
        n_known = min(prefix_codes.shape[1], n)
        known = model.codes_to_ids(prefix_codes[:, :n_known].to(device))  # (B, k*h*w)
        frames[:, :n_known] = known.view(batch_size, n_known, hw)
    init_options = SamplingOptions.of(
        options,
        top_k=options.top_k if top_k_init is None else top_k_init,
        top_p=options.top_p if top_p_init is None else top_p_init,
    )
    # (first latent frame of each window, its options): a whole clip after any given frames, then
    # windows of p given frames and t - p new ones
    windows = [(0, init_options)] if n_known < t else []
    start = max(n_known, t)
    windows += [(f - p, options) for f in range(start, n, t - p)]
    for first, opts in tqdm(windows, desc="long sample (masked)", disable=not progress):
        ids = _window(model, batch_size, cond_ids)
        span = min(t, n - first)  # frames of the window inside the video
        ids[:, n_cond : n_cond + span * hw] = frames[:, first : first + span].reshape(batch_size, -1)
        filled = masked_decode(model, ids, opts)[:, n_cond:].view(batch_size, t, hw)
        frames[:, first : first + span] = filled[:, :span]  # given frames come back unchanged
    ids = frames.view(batch_size, n, h, w)
    return ids if return_ids else (ids - config.n_cond_vocab).clamp(0, config.n_codes - 1)
