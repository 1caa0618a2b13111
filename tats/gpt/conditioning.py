"""Token layouts: condition ids first, then the video codes shifted by the condition vocabulary.

the release, "Token ids":

- unconditional: ``[0, z ...]``, vocabulary ``n_codes`` (the start token shares id 0 with code 0);
- class label:   ``[label, z + n_classes ...]``;
- text:          ``[BPE ids ..., z + 49408 ...]``;
- audio:         ``[audio codes ..., z + n_audio_codes ...]``.

Video codes are flattened in (t, h, w) order. Ids back to codes use the release's
``clamp(id - n_cond_vocab, 0, n_codes - 1)``: a sampled condition id (possible, since the head
covers the whole vocabulary) becomes code 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch

from tats.gpt.config import GPTConfig

Cond = Union[None, int, Sequence[int], str, Sequence[str], torch.Tensor]


def _as_batch(t: torch.Tensor, batch_size: int, what: str) -> torch.Tensor:
    if t.shape[0] == 1 and batch_size > 1:
        t = t.expand(batch_size, *t.shape[1:])
    if t.shape[0] != batch_size:
        raise ValueError(f"{what}: got {t.shape[0]} rows for batch_size={batch_size}")
    return t


def check_labels(labels: torch.Tensor, n_classes: int) -> None:
    """Raise ValueError unless every class id in ``labels`` lies in ``[0, n_classes)``."""
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"class labels must lie in [0, {n_classes}), got {labels.flatten().tolist()}")


def cond_tokens(
    config: GPTConfig, cond: Cond, batch_size: int, device: torch.device | None = None, truncate: bool = True,
    check_range: bool = True,
) -> torch.Tensor:
    """The condition ids that start every sequence, LongTensor ``(B, n_cond_tokens)``.

    ``cond`` by ``config.cond_type``:

    - ``"none"``: ignored (must be None); the start token 0.
    - ``"label"``: an int (one class for the batch), or ``(B,)`` / ``(B, 1)`` class ids, checked to lie
      in ``[0, n_cond_vocab)`` unless ``check_range=False`` (for callers that checked them on the host,
      as training does before the batch moves to the device, where the check would be a sync).
    - ``"text"``: a caption or a list of B captions (CLIP BPE, padded/truncated to
      ``n_cond_tokens``; ``truncate=False``: a longer caption is an error), or token ids ``(n,)`` /
      ``(B, n)``.
    - ``"audio"``: audio-VQGAN codes, any shape ``(B, ...)`` with ``n_cond_tokens`` codes per row.
    """
    n = config.n_cond_tokens
    kind = config.cond_type
    if kind == "none":
        if cond is not None:
            raise ValueError("this transformer is unconditional; pass cond=None")
        return torch.zeros(batch_size, 1, dtype=torch.long, device=device)
    if cond is None:
        raise ValueError(
            f"this transformer is {kind}-conditional; pass cond="
            + {"label": f"a class id in [0, {config.n_cond_vocab})",
               "text": "a caption (str) or a list of captions",
               "audio": "the audio-VQGAN codes of the clip"}[kind]
        )
    if kind == "label":
        labels = torch.as_tensor(cond, dtype=torch.long).reshape(-1, 1)  # (B or 1, 1), where cond was
        if check_range:  # (a sync when the labels are on a device)
            check_labels(labels, config.n_cond_vocab)
        return _as_batch(labels.to(device), batch_size, "cond labels")
    if kind == "text":
        if isinstance(cond, str) or (isinstance(cond, (list, tuple)) and cond and isinstance(cond[0], str)):
            from tats.gpt.tokenizer import tokenize

            texts = [cond] if isinstance(cond, str) else list(cond)
            ids = tokenize(texts, context_length=n, truncate=truncate).to(device)  # (B or 1, n)
        else:
            ids = torch.as_tensor(cond, dtype=torch.long, device=device)
            ids = ids.reshape(1, -1) if ids.dim() == 1 else ids
        if ids.shape[1] != n:
            raise ValueError(f"text condition must have {n} tokens per row, got {ids.shape[1]}")
        return _as_batch(ids, batch_size, "cond text")
    # audio
    codes = torch.as_tensor(cond, dtype=torch.long, device=device)
    codes = codes.reshape(1, -1) if codes.dim() == 1 else codes.flatten(1)  # (B, n)
    if codes.shape[1] != n:
        raise ValueError(f"audio condition must have {n} codes per clip, got {codes.shape[1]}")
    if codes.min() < 0 or codes.max() >= config.n_cond_vocab:
        raise ValueError(f"audio codes must lie in [0, {config.n_cond_vocab})")
    return _as_batch(codes, batch_size, "cond audio codes")


def null_cond_tokens(config: GPTConfig, batch_size: int, device: torch.device | None = None) -> torch.Tensor:
    """The null condition ``(B, n_cond_tokens)``, every id :attr:`GPTConfig.null_id`: what guided
    sampling feeds for the unconditional logits (classifier-free guidance, Ho and Salimans 2022)."""
    return torch.full((batch_size, config.n_cond_tokens), config.null_id, dtype=torch.long, device=device)


def drop_condition(
    config: GPTConfig, cond: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Condition dropout for classifier-free guidance: each row of ``cond (B, n_cond_tokens)`` is
    replaced by the null condition with probability ``p`` (a new tensor; ``p = 0`` returns ``cond``)."""
    if p <= 0:
        return cond
    drop = torch.rand(cond.shape[0], 1, generator=generator, device=cond.device) < p  # (B, 1)
    return torch.where(drop, torch.full_like(cond, config.null_id), cond)


def codes_to_ids(config: GPTConfig, codes: torch.Tensor) -> torch.Tensor:
    """VQGAN codes ``(B, t, h, w)`` (or already flat ``(B, L)``) -> token ids ``(B, t*h*w)``."""
    return codes.flatten(1) + config.n_cond_vocab


def ids_to_codes(
    config: GPTConfig, ids: torch.Tensor, latent_shape: Sequence[int] | None = None
) -> torch.Tensor:
    """Token ids ``(B, L)`` -> codes ``clamp(id - n_cond_vocab, 0, n_codes - 1)``.

    Reshaped to ``(B, *latent_shape)`` when ``latent_shape`` is given (``t*h*w == L``).
    """
    codes = (ids - config.n_cond_vocab).clamp(0, config.n_codes - 1)
    if latent_shape is not None:
        codes = codes.reshape(ids.shape[0], *latent_shape)
    return codes
