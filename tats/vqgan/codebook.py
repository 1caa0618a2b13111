"""EMA vector-quantisation codebook (the release, "VQGAN", Codebook).

Buffers keep the release's names (``embeddings``, ``N``, ``z_avg``) for checkpoint compatibility;
``initialized`` is ours (see :meth:`Codebook._load_from_state_dict`).

Memory: the nearest-code search runs over chunks of rows so it never holds more than
``chunk_elements`` distances at once, and the EMA statistics use ``bincount`` / ``index_add_``, so no
``(N, n_codes)`` one-hot is ever built. All codebook math runs in fp32 with autocast disabled, since
bf16 distances would flip nearest codes and corrupt the running averages.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from tats.distributed import all_reduce_sum, broadcast
from tats.precision import autocast_off, no_tf32

EMA_DECAY = 0.99
LAPLACE_EPS = 1e-7
COMMITMENT_COST = 0.25
FP32_BUFFERS = ("embeddings", "N", "z_avg")


def nearest_codes(
    flat: torch.Tensor, embeddings: torch.Tensor, chunk_elements: int = 1 << 24
) -> torch.Tensor:
    """Index of the nearest code by squared L2 for each row; ties go to the lowest index.

    ``flat (N, D)``, ``embeddings (K, D)`` (both fp32) -> ``LongTensor (N,)``. Distances are
    ``|x|^2 - 2 x.e + |e|^2`` (the release's expansion and order, so near-ties round alike), computed
    for ``max(1, chunk_elements // K)`` rows at a time: peak extra memory is about
    ``chunk_elements`` floats whatever N is. TF32 is off for the distances
    (:func:`tats.precision.no_tf32`): its 10-bit products would flip near-ties.
    """
    with no_tf32():
        return _nearest_codes(flat, embeddings, chunk_elements)


def _nearest_codes(flat: torch.Tensor, embeddings: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    n, k = flat.shape[0], embeddings.shape[0]
    e_sq = embeddings.pow(2).sum(dim=1)[None, :]  # (1, K)
    rows = max(1, chunk_elements // max(k, 1))
    out = torch.empty(n, dtype=torch.long, device=flat.device)
    for start in range(0, n, rows):
        x = flat[start:start + rows]  # (c, D)
        # fused |x|^2 - 2 x.e (one GEMM pass, no separate (c, K) temporaries), then + |e|^2 in place
        dist_ = torch.addmm(x.pow(2).sum(dim=1, keepdim=True), x, embeddings.t(), alpha=-2).add_(e_sq)
        out[start:start + rows] = dist_.argmin(dim=1)  # argmin returns the first minimum: lowest index
    return out


class Codebook(nn.Module):
    """EMA codebook with Laplace smoothing, data-dependent init and random restarts.

    ``forward(z (B, D, t, h, w))`` returns ``dict(embeddings=(B, D, t, h, w)`` straight-through
    quantised latents in ``z``'s dtype, ``encodings=LongTensor (B, t, h, w)``,
    ``commitment_loss`` (scalar), ``perplexity`` (scalar, exp of the entropy of this batch's code
    usage), ``usage`` (scalar fraction of codes used in this batch)). Statistics are updated only in
    training mode.

    Distributed training: ``all_reduce_fn(t)`` sums in place over ranks (counts and sums of the
    EMA) and ``broadcast_fn(t, src)`` copies rank 0's random vectors for init/restart; by default
    torch.distributed ops when a process group is initialised, else no-ops. The defaults decide at
    CALL time (the model is built before Lightning creates the process group), so every rank of a DDP
    run holds an identical codebook. A batch with non-finite encoder outputs (on any rank) leaves the
    statistics untouched.
    """

    def __init__(
        self,
        n_codes: int,
        embedding_dim: int,
        no_random_restart: bool = False,
        restart_thres: float = 1.0,
        chunk_elements: int = 1 << 24,
        all_reduce_fn: Callable[[torch.Tensor], object] = all_reduce_sum,
        broadcast_fn: Callable[..., object] = broadcast,
    ) -> None:
        super().__init__()
        self.n_codes = n_codes
        self.embedding_dim = embedding_dim
        self.no_random_restart = no_random_restart
        self.restart_thres = restart_thres
        self.chunk_elements = chunk_elements
        self.all_reduce_fn = all_reduce_fn
        self.broadcast_fn = broadcast_fn
        self.register_buffer("embeddings", torch.randn(n_codes, embedding_dim))
        self.register_buffer("N", torch.zeros(n_codes))
        self.register_buffer("z_avg", self.embeddings.clone())
        # Ours: persistent so a resumed run never re-initialises (the release does not
        # store this flag); a state dict without it (a release file) counts as initialised.
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized_seen: tuple[int, int] | None = None  # (storage, version) of the flag last read
        self._initialized_value = False

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):  # noqa: D401 - torch hook
        key = prefix + "initialized"
        if key not in state_dict and (prefix + "embeddings") in state_dict:
            # A release checkpoint: its codebook was trained, so it must not be re-initialised.
            state_dict = {**state_dict, key: torch.tensor(True)}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _apply(self, fn, recurse: bool = True):  # noqa: D401 - torch hook behind .to() / .half() / ...
        """Moves follow ``fn``, but the codebook buffers stay fp32: a ``bf16-true``/``16-true`` cast would
        freeze the EMA (300 + 0.01 == 300 in bf16) and round the code vectors."""
        keep = {name: buf for name, buf in self._buffers.items()
                if name in FP32_BUFFERS and buf is not None and buf.dtype == torch.float32}
        super()._apply(fn, recurse)
        for name, old in keep.items():
            new = self._buffers[name]
            if new is not None and new.dtype != torch.float32:
                self._buffers[name] = old.to(device=new.device)  # the fp32 values, on the new device
        return self

    def is_initialized(self) -> bool:
        """``bool(self.initialized)``, read from the device only when the flag was written since the last
        read (its storage or version counter changed), so a training step needs no device-to-host sync."""
        flag = self.initialized
        try:
            key = (flag.data_ptr(), flag._version)
        except RuntimeError:  # an inference tensor keeps no version counter
            return bool(flag)
        if key != self._initialized_seen:
            self._initialized_value, self._initialized_seen = bool(flag), key
        return self._initialized_value

    # ----------------------------------------------------------------------------------- helpers
    def random_vectors(self, flat: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` distinct rows drawn at random from this rank's encoder outputs ``flat (N, D)``.

        As in the release, when the batch has fewer vectors than codes (N < n_codes) the outputs are
        tiled ``ceil(n_codes / N)`` times with Gaussian noise of std ``0.01 / sqrt(D)`` added, so
        the picks are distinct. Only the picked rows are materialised. The RNG is torch's global
        generator on ``flat``'s device; the result is broadcast from rank 0 so every rank agrees.
        Returns ``(count, D)`` fp32.
        """
        n, d = flat.shape
        tiles = math.ceil(self.n_codes / n) if n < self.n_codes else 1
        idx = torch.randperm(n * tiles, device=flat.device)[:count]  # (count,) into the tiled rows
        picked = flat[idx % n]  # row r of the tiled tensor is flat[r % n]
        if tiles > 1:
            picked = picked + torch.randn_like(picked) * (0.01 / math.sqrt(d))
        picked = picked.contiguous()
        self.broadcast_fn(picked, 0)
        return picked

    def _init_from(self, flat: torch.Tensor) -> None:
        """Data-dependent init from the first training batch: codes = random encoder outputs.

        A batch with non-finite encoder outputs (on any rank) is no init: the codebook stays
        uninitialised and the next finite batch initialises it."""
        nonfinite = (~torch.isfinite(flat)).any().float().reshape(1)
        self.all_reduce_fn(nonfinite)
        if nonfinite.item() > 0:
            return
        vectors = self.random_vectors(flat, self.n_codes)
        self.embeddings.copy_(vectors)
        self.z_avg.copy_(vectors)
        self.N.fill_(1.0)
        self.initialized.fill_(True)

    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """EMA of counts and sums, Laplace-smoothed normalisation, then restart of rare codes.
        ``flat (N, D)``, ``idx (N,)`` its codes, ``counts (K,)`` = bincount of ``idx`` (summed in place
        over ranks here)."""
        # A non-finite encoder output (a diverging step, which the trainer then skips) must not poison
        # the running averages for good: skip the whole update, on every rank alike (counted over ranks).
        nonfinite = (~torch.isfinite(flat)).any().float().reshape(1)
        self.all_reduce_fn(nonfinite)
        sums = torch.zeros(self.n_codes, self.embedding_dim, device=flat.device)
        sums.index_add_(0, idx, flat)  # (K, D): sum of the vectors assigned to each code
        self.all_reduce_fn(counts)
        self.all_reduce_fn(sums)
        N = self.N.float().mul(EMA_DECAY).add_(counts, alpha=1 - EMA_DECAY)  # new tensors: the buffers
        z_avg = self.z_avg.float().mul(EMA_DECAY).add_(sums, alpha=1 - EMA_DECAY)  # are written below
        total = N.sum()
        # Laplace smoothing (as in the release): w = (N + eps) / (sum N + K eps) * sum N
        weights = (N + LAPLACE_EPS) / (total + self.n_codes * LAPLACE_EPS) * total
        embeddings = z_avg / weights[:, None]
        if self.no_random_restart:  # skipped on the device (torch.where): no sync per step
            keep_old = nonfinite > 0  # (1,)
            N = torch.where(keep_old, self.N, N)
            z_avg = torch.where(keep_old, self.z_avg, z_avg)
            embeddings = torch.where(keep_old, self.embeddings, embeddings)
        else:
            # N is identical on all ranks after the all-reduce, so every rank restarts the same codes.
            # The restart needs the number of dead codes on the host (it sizes the random draw); it is
            # read together with the non-finite flag: one device-to-host sync per step.
            dead = N < self.restart_thres  # (K,)
            skip, n_dead = torch.cat([nonfinite, dead.sum().reshape(1).float()]).tolist()
            if skip > 0:
                return
            if n_dead > 0:
                # the j-th dead code (in index order) gets the j-th random vector, without a nonzero()
                vectors = self.random_vectors(flat, int(n_dead))  # (R, D)
                slot = (dead.cumsum(0) - 1).clamp_(min=0)  # (K,): j for the j-th dead code
                embeddings = torch.where(dead[:, None], vectors[slot], embeddings)
        self.N.copy_(N)
        self.z_avg.copy_(z_avg)
        self.embeddings.copy_(embeddings)

    # ----------------------------------------------------------------------------------- forward
    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest codes without touching any statistics: ``(B, D, t, h, w) -> (B, t, h, w)``."""
        with autocast_off(z.device.type):
            b, _, t, h, w = z.shape
            flat = rearrange(z.float(), "b d t h w -> (b t h w) d")
            idx = nearest_codes(flat, self.embeddings.float(), self.chunk_elements)
            return idx.view(b, t, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, t, h, w)`` -> code vectors ``(B, D, t, h, w)`` (fp32)."""
        return rearrange(F.embedding(codes, self.embeddings.float()), "b t h w d -> b d t h w")

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        in_dtype = z.dtype
        with autocast_off(z.device.type):
            z = z.float()
            b, _, t, h, w = z.shape
            flat = rearrange(z, "b d t h w -> (b t h w) d")
            if self.training and not self.is_initialized():
                with torch.no_grad():
                    self._init_from(flat.detach())
            idx = nearest_codes(flat.detach(), self.embeddings.float(), self.chunk_elements)  # (N,)
            quantized = rearrange(F.embedding(idx, self.embeddings.float()), "(b t h w) d -> b d t h w",
                                  b=b, t=t, h=h, w=w)
            commitment_loss = COMMITMENT_COST * F.mse_loss(z, quantized.detach())

            with torch.no_grad():
                counts = torch.bincount(idx, minlength=self.n_codes).float()  # this rank's usage
                probs = counts / idx.numel()
                perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
                usage = (counts > 0).float().mean()
                if self.training:
                    self._ema_update(flat.detach(), idx, counts.clone())

            # straight-through: forward uses the codes, gradients flow to z unchanged
            quantized_st = z + (quantized - z).detach()
        return dict(
            embeddings=quantized_st.to(in_dtype),
            encodings=idx.view(b, t, h, w),
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            usage=usage,
        )
