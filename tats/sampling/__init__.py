"""Sampling: pure functions over a :class:`tats.gpt.video_transformer.VideoTransformer` with a static
KV cache.

- :mod:`tats.sampling.core`: what every sampler shares: :class:`SamplingOptions` (how a token is
  drawn, in which precision), :func:`kv_cache` and the token loop :func:`generate_tokens`.
- :func:`sample_short`: one training-length clip of codes ``(B, t, h, w)``.
- :func:`sample_long`: the temporal (and optional spatial) sliding window, ``(B, n, H, W)``.
  Both dispatch on the model: a masked-token model (``--objective masked``) is decoded in parallel
  (:mod:`tats.sampling.masked`: :func:`masked_decode`, :func:`sample_short_masked`,
  :func:`sample_long_masked`; ``SamplingOptions.steps``).
- :mod:`tats.sampling.guidance`: classifier-free guidance for both (``SamplingOptions.cfg_scale``,
  :func:`guide_logits`).
- :func:`sample_hierarchical`: sparse AR frames, then the interpolation transformer.
- :func:`predict_frames`: continue the first frames of real videos.
- :func:`decode_codes`: VQGAN decoding of long code sequences in temporal chunks
  (:mod:`tats.vqgan.decode`; a model's :meth:`~tats.gpt.video_transformer.VideoTransformer.decode`).
- :func:`filter_logits` / :func:`sample_next`: temperature, top-k, top-p; ``release_compat=True``
  reproduces the release's rule that ``top_k=None`` disables top-p too; with top-k the draw works
  on the k survivors only (:func:`top_k_top_p_probs`; on the CPU :func:`draw_filtered_cpu`), the
  same distribution as the full filter.

Greedy sampling reproduces the release's greedy samplers token for token
(tests/sampling/test_sampling_long.py).
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
