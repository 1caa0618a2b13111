"""The sampling core every sampler shares: how a token is drawn (:class:`SamplingOptions`), the one
place sampling precision is chosen (:func:`precision`), the static KV cache's lifetime
(:func:`kv_cache`) and the token loop (:func:`generate_tokens`).

The loop prefills the given tokens in one batched forward that fills the cache; then one token per
step is fed at its absolute position, and only the last position's logits are computed (the head is
the largest matrix for a 16k vocabulary). No per-step ``torch.cat``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from tats.gpt.model import GPT
from tats.sampling.compiled import decoder_for
from tats.sampling.filtering import DrawRule, draw_with_uniform, sample_next
from tats.sampling.guidance import guide_logits, is_guided

__all__ = ["SamplingOptions", "generate_tokens", "kv_cache", "precision"]


@dataclass
class SamplingOptions:
    """How the next token is drawn (see :func:`tats.sampling.filtering.sample_next`) and in which
    precision the transformer runs (``dtype``: autocast dtype, e.g. ``torch.bfloat16`` on GPU; None =
    float32). ``generator``: a ``torch.Generator`` on the model's device, for reproducible draws.
    ``compile``: decode with the compiled prefill and step (:mod:`tats.sampling.compiled`).
    ``cfg_scale``: classifier-free guidance (:mod:`tats.sampling.guidance`; 1 = none, exactly).
    ``steps``, ``mask_temperature``: masked models only (:mod:`tats.sampling.masked`): parallel decoding
    steps per window, and the start of the linearly annealed temperature of the confidence noise."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    generator: torch.Generator | None = None
    release_compat: bool = False
    dtype: torch.dtype | None = None
    compile: bool = False
    cfg_scale: float = 1.0
    steps: int = 12
    mask_temperature: float = 4.5

    @classmethod
    def of(cls, options: SamplingOptions | None = None, **fields: Any) -> SamplingOptions:
        """``options`` (default: all defaults) with ``fields`` replaced: how the samplers take both an
        options object and its fields as keywords (``sample_short(model, 4, greedy=True)``). An unknown
        field is a ``TypeError``."""
        return dataclasses.replace(options if options is not None else cls(), **fields)

    @property
    def rule(self) -> DrawRule:
        """The draw as constants (for compiled steps)."""
        return DrawRule.of(self.temperature, self.top_k, self.top_p, self.greedy, self.release_compat)

    def uniforms(self, n: int, batch_size: int, device: torch.device) -> torch.Tensor:
        """``(n, B)`` uniform numbers for ``n`` draws from :attr:`generator` (zeros when greedy)."""
        if self.greedy:
            return torch.zeros(n, batch_size, device=device)
        return torch.rand(n, batch_size, generator=self.generator, device=device)

    def draw(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits (B, V)`` -> tokens ``(B,)``. On the CPU :func:`~tats.sampling.filtering.sample_next`
        (numpy's selection); elsewhere the same rule in tensor ops from one uniform per row, ties at the
        k-th logit settled on the device, so a GPU token loop never waits for the host."""
        if logits.device.type == "cpu":
            return sample_next(logits, self.temperature, self.top_k, self.top_p, self.greedy, self.generator,
                               self.release_compat)
        u = torch.rand(logits.shape[0], generator=self.generator, device=logits.device)
        return draw_with_uniform(logits.float(), u, self.rule, exact_ties=True)[0]


def precision(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The one place sampling precision is chosen: autocast to ``dtype`` (e.g. bf16), or fp32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def kv_cache(gpt: GPT, batch_size: int, dtype: torch.dtype | None = None,
             options: SamplingOptions | None = None) -> Iterator[GPT]:
    """The GPT's KV cache (``block_size`` long) for a ``with`` block of sampling.

    The cache stays allocated afterwards and the next block with the same batch size and precision
    reuses it (:meth:`~tats.gpt.model.GPT.ensure_kv_cache`); ``gpt.clear_kv_cache()`` frees it. With
    ``options.compile`` it is the compiled decoder's cache (:func:`tats.sampling.compiled.decoder_for`).
    """
    if options is not None and options.compile:
        decoder_for(gpt, batch_size, options.rule, dtype)
    else:
        gpt.ensure_kv_cache(batch_size, dtype=dtype if dtype is not None else gpt.pos_emb.dtype,
                            static_shapes=False)
    yield gpt


def generate_tokens(
    gpt: GPT,
    prefix: torch.Tensor,
    n_new: int,
    options: SamplingOptions,
    progress: bool = False,
    desc: str = "tokens",
    prefix_pos: torch.Tensor | None = None,
    first_pos: int | None = None,
    uncond_prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Continue ``prefix (B, P)`` by ``n_new`` tokens; returns the new ids ``(B, n_new)``.

    The prefix sits at window positions ``0..P-1`` and the new tokens follow at ``P, P+1, ...``;
    ``prefix_pos (P,)`` / ``first_pos`` place them elsewhere (the interpolation transformer prefills
    both ends of its window and fills the middle). The KV cache must be allocated (:func:`kv_cache`)
    for batch B; it is overwritten from position 0, so one allocation serves every window of a long
    video.

    Guidance (``options.cfg_scale != 1``): ``uncond_prefix (B, P)`` is the prefix with the null
    condition; both run as one batch of 2B rows (the cache must hold 2B) and each token is drawn from
    the guided logits (:func:`tats.sampling.guidance.guide_logits`) and fed to both halves.
    """
    B, P = prefix.shape
    if n_new <= 0:
        return prefix.new_empty(B, 0)
    guided = is_guided(options)
    if guided:
        if uncond_prefix is None or options.compile:
            raise ValueError("cfg_scale != 1 needs the eager token loop (compile=False) and uncond_prefix")
        prefix = torch.cat([prefix, uncond_prefix], dim=0)  # (2B, P): conditional rows, then unconditional
    first = P if first_pos is None else first_pos
    if first + n_new - 1 > gpt.block_size:
        raise ValueError(
            f"{P} prefix + {n_new} new tokens need a window of {first + n_new - 1} > block_size "
            f"{gpt.block_size}"
        )
    positions = torch.arange(gpt.block_size, device=prefix.device)
    out = prefix.new_empty(B, n_new)
    pos = positions[:P] if prefix_pos is None else prefix_pos
    # the cache length after the prefill: known on the host, so no step waits for the device
    kv_len = P if prefix_pos is None else int(prefix_pos.max()) + 1
    steps = tqdm(range(n_new), desc=desc, disable=not progress, leave=False)
    if options.compile:
        decoder = decoder_for(gpt, B, options.rule, options.dtype)
        u = options.uniforms(n_new, B, prefix.device)  # (n_new, B)
        pad = decoder.batch_size - B  # a smaller last batch runs on the larger batch's graphs
        if pad:
            prefix = torch.cat([prefix, prefix[:1].expand(pad, -1)])
            u = torch.cat([u, u.new_zeros(n_new, pad)], dim=1)
        with decoder.settings(), contextlib.ExitStack() as stack:
            token = decoder.prefill(prefix.contiguous(), pos, kv_len, u[0])  # expanded ids: one graph
            for i in steps:
                if i:  # feed the previous token at its absolute position, draw the next
                    p = first + i - 1
                    token = decoder.step(token, positions[p : p + 1], p + 1, u[i])
                    if i == 1:  # the first step compiled its graph if it was new: guard lightly from here
                        stack.enter_context(decoder.warm())
                out[:, i] = token[:B]
        return out
    logits = gpt(prefix, input_pos=pos, last_only=True, kv_len=kv_len)[:, -1]  # (B or 2B, V)
    for i in steps:
        token = options.draw(guide_logits(logits, options.cfg_scale) if guided else logits)  # (B,)
        out[:, i] = token
        if i + 1 < n_new:
            p = first + i  # the token's absolute position in the window
            fed = torch.cat([token, token]) if guided else token
            logits = gpt(fed[:, None], input_pos=positions[p : p + 1], last_only=True, kv_len=p + 1)[:, -1]
    return out
