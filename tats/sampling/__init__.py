"""Sampling: pure functions over a :class:`tats.gpt.video_transformer.VideoTransformer` with a static
KV cache.

:mod:`tats.sampling.core` holds what every sampler shares (:class:`SamplingOptions`, :func:`kv_cache`,
the token loop :func:`generate_tokens`); :func:`sample_short` and :func:`sample_long` (the sliding
window) dispatch on the model (a masked-token model is decoded in parallel, :mod:`tats.sampling.masked`);
then :func:`sample_hierarchical`, :func:`predict_frames`, classifier-free guidance
(:mod:`tats.sampling.guidance`), :func:`decode_codes` (chunked VQGAN decoding) and the logit filters
(:func:`filter_logits`, :func:`sample_next`). Greedy sampling reproduces the release's greedy samplers
token for token (docs/sampling.md).
"""

from tats.sampling.core import SamplingOptions, generate_tokens, kv_cache, precision
from tats.sampling.filtering import draw_filtered_cpu, filter_logits, sample_next, top_k_top_p_probs
from tats.sampling.frames import encode_observed, observed_latent_frames, predict_frames
from tats.sampling.guidance import guide_logits
from tats.sampling.hierarchical import interpolate_frames, interpolation_layout, sample_hierarchical
from tats.sampling.long import context_frames, sample_long, spatial_origin
from tats.sampling.masked import masked_decode, remaining_masked, sample_long_masked, sample_short_masked
from tats.sampling.short import sample_short
from tats.vqgan.decode import decode_codes

__all__ = [
    "SamplingOptions",
    "context_frames",
    "decode_codes",
    "draw_filtered_cpu",
    "encode_observed",
    "filter_logits",
    "generate_tokens",
    "guide_logits",
    "interpolate_frames",
    "interpolation_layout",
    "kv_cache",
    "masked_decode",
    "observed_latent_frames",
    "precision",
    "predict_frames",
    "remaining_masked",
    "sample_hierarchical",
    "sample_long",
    "sample_long_masked",
    "sample_next",
    "sample_short",
    "sample_short_masked",
    "spatial_origin",
    "top_k_top_p_probs",
]
