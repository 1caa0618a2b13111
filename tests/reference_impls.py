"""Reference implementations the suite compares the package against, each written out from the rule it
states rather than from the code under test; the benchmarks time the package against the same ones.

- the release's sampler: a concatenating key/value cache, full-vocabulary logits and filter
  (:func:`baseline_generate`, :func:`baseline_long`; the release, "Sampling"), and decoding without
  any cache (:func:`greedy_uncached`);
- the codebook with full matrices and a one-hot (:class:`OneHotCodebook`, :func:`onehot_nearest_codes`);
- scipy's Frechet distance (:func:`scipy_frechet_distance`);
- the release's clip preprocessing in float64 (:func:`release_clip`);
- the release's training steps (:class:`ReleaseVQGANModule`: one forward per optimizer;
  :class:`ReleaseTransformerModule`: explicit attention with the stored mask, :func:`release_gpt_logits`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from tats.gpt import GPT
from tats.gpt.lightning import TransformerModule
from tats.vqgan.codebook import COMMITMENT_COST, EMA_DECAY, LAPLACE_EPS, Codebook
from tats.vqgan.lightning import VQGANModule, _step_uncounted

# ----------------------------------------------------------------------------- the release's sampler


def baseline_forward(gpt: GPT, idx: torch.Tensor, past: list[torch.Tensor] | None, past_length: int):
    """One forward of the concatenating sampler.

    ``idx (B, T)``; ``past``: list of ``(L, 2, B, nh, T_i, hd)`` per earlier step, or None at step 0.
    Returns logits ``(B, T, V)`` (every position) and this step's ``(L, 2, B, nh, T, hd)``.
    """
    B, T = idx.shape
    x = gpt.tok_emb(idx)
    if past is not None:
        stacked = torch.cat(past, dim=-2)  # (L, 2, B, nh, past_length, hd), regrown every step
        x = x + gpt.pos_emb[:, past_length]
    else:
        stacked = None
        x = x + gpt.pos_emb[:, :T]
    presents = []
    for i, block in enumerate(gpt.blocks):
        a = block.attn
        h = block.ln1(x)
        nh = a.n_head
        k = a.key(h).view(B, T, nh, -1).transpose(1, 2)  # (B, nh, T, hd)
        q = a.query(h).view(B, T, nh, -1).transpose(1, 2)
        v = a.value(h).view(B, T, nh, -1).transpose(1, 2)
        presents.append(torch.stack((k, v)))
        if stacked is not None:
            k = torch.cat((stacked[i, 0], k), dim=-2)
            v = torch.cat((stacked[i, 1], v), dim=-2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / k.shape[-1] ** 0.5)
        if stacked is None:
            att = att.masked_fill(a.mask[:, :, :T, :T] == 0, float("-inf"))
        y = (F.softmax(att, dim=-1) @ v).transpose(1, 2).contiguous().view(B, T, -1)
        x = x + a.proj(y)
        x = x + block.mlp(block.ln2(x))
    logits = gpt.head(gpt.ln_f(x))  # (B, T, V): every position
    return logits, torch.stack(presents)


def baseline_filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Full-vocabulary top-k then top-p, in place on ``logits (B, V)`` (the release, "Sampling")."""
    if top_k > 0:
        k = min(max(top_k, 1), logits.shape[-1])
        logits[logits < torch.topk(logits, k)[0][..., -1, None]] = float("-inf")
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        remove = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1) > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        logits[remove.scatter(1, sorted_idx, remove)] = float("-inf")
    return logits


def baseline_generate(gpt: GPT, prefix: torch.Tensor, steps: int, top_k: int | None = None,
                      top_p: float = 1.0, temperature: float = 1.0, greedy: bool = False) -> torch.Tensor:
    """``steps`` new tokens after ``prefix (B, P)``, the release's loop; returns ``(B, steps)``."""
    sample, x, past = prefix, prefix, None
    for n in range(steps):
        logits, present = baseline_forward(gpt, x, past, n + prefix.shape[1] - 1)
        past = [present] if past is None else past + [present]
        logits = logits[:, -1, :] / temperature
        if top_k is not None:
            logits = baseline_filter(logits, top_k, top_p)
        probs = F.softmax(logits, dim=-1)
        x = torch.topk(probs, k=1, dim=-1)[1] if greedy else torch.multinomial(probs, num_samples=1)
        sample = torch.cat((sample, x), dim=1)
    return sample[:, prefix.shape[1] :]


def baseline_long(gpt: GPT, cond: torch.Tensor, n_frames: int, hw: int, p: int = 1, **kw) -> torch.Tensor:
    """The release's fast sliding window: the first p frames, then one frame per window."""
    ids = baseline_generate(gpt, cond, p * hw, **kw)
    for f in range(p, n_frames):
        window = torch.cat([cond, ids[:, (f - p) * hw : f * hw]], dim=1)
        ids = torch.cat([ids, baseline_generate(gpt, window, hw, **kw)], dim=1)
    return ids


@torch.no_grad()
def greedy_uncached(gpt: GPT, prefix: torch.Tensor, n_new: int) -> torch.Tensor:
    """Greedy decoding with a full forward over the whole window for every token (no cache):
    ``prefix (B, P)`` -> the ``n_new`` new ids ``(B, n_new)``."""
    seq = prefix
    for _ in range(n_new):
        seq = torch.cat([seq, gpt(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, prefix.shape[1] :]


# ----------------------------------------------------------------------------- the codebook


class OneHotCodebook(Codebook):
    """Baseline: same maths as :class:`Codebook`, written with full matrices and a one-hot."""

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            b, _, t, h, w = z.shape
            flat = rearrange(z, "b d t h w -> (b t h w) d")
            emb = self.embeddings
            dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ emb.t() + emb.pow(2).sum(1)[None]  # (N, K)
            idx = dist.argmin(1)
            onehot = F.one_hot(idx, self.n_codes).type_as(flat)  # (N, K)
            quantized = rearrange(F.embedding(idx, emb), "(b t h w) d -> b d t h w", b=b, t=t, h=h, w=w)
            commitment = COMMITMENT_COST * F.mse_loss(z, quantized.detach())
            with torch.no_grad():
                probs = onehot.mean(0)
                perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
                if self.training:
                    n_total = onehot.sum(0)
                    sums = flat.detach().t() @ onehot  # (D, K)
                    self.N.mul_(EMA_DECAY).add_(n_total, alpha=1 - EMA_DECAY)
                    self.z_avg.mul_(EMA_DECAY).add_(sums.t(), alpha=1 - EMA_DECAY)
                    n = self.N.sum()
                    weights = (self.N + LAPLACE_EPS) / (n + self.n_codes * LAPLACE_EPS) * n
                    new = self.z_avg / weights[:, None]
                    y = flat.detach()
                    if y.shape[0] < self.n_codes:  # tile the whole batch
                        reps = math.ceil(self.n_codes / y.shape[0])
                        y = y.repeat(reps, 1)
                        y = y + torch.randn_like(y) * 0.01 / math.sqrt(y.shape[1])
                    rand = y[torch.randperm(y.shape[0], device=y.device)][: self.n_codes]
                    alive = (self.N >= self.restart_thres).float()[:, None]
                    if self.no_random_restart:
                        alive.fill_(1.0)
                    self.embeddings.copy_(new * alive + rand * (1 - alive))
            st = z + (quantized - z).detach()
        return dict(embeddings=st, encodings=idx.view(b, t, h, w), commitment_loss=commitment,
                    perplexity=perplexity, usage=(probs > 0).float().mean())


def onehot_nearest_codes(flat: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Nearest code of each row of ``flat (N, D)`` among ``emb (K, D)`` from the full distance matrix."""
    dist = (flat[:, None, :] - emb[None]).pow(2).sum(-1)  # (N, K), full matrix
    onehot = F.one_hot(dist.argmin(1), emb.shape[0])  # (N, K)
    return onehot.argmax(1)


# ----------------------------------------------------------------------------- metrics and data


def scipy_frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance of features ``a (N, D)`` and ``b (M, D)`` with ``scipy.linalg.sqrtm``."""
    import scipy.linalg

    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def release_clip(frames: np.ndarray, start: int, seq: int, every: int, resolution: int) -> torch.Tensor:
    """The release's clip of uint8 ``frames (N, H, W, 3)`` (H the shorter side) for the window at ``start``
    of ``seq`` frames keeping every ``every``-th, in float64: shorter side resized to ``resolution``
    (bilinear, ``align_corners=False``, the other side rounded up), centre crop, ``x / 255 - 0.5``.
    Returns ``(C, T, resolution, resolution)``."""
    _, h, w, _ = frames.shape
    window = frames[start : start + seq][::every]  # (T, H, W, 3)
    x = torch.from_numpy(window).double().permute(0, 3, 1, 2) / 255  # (T, C, H, W)
    size = (resolution, math.ceil(w * resolution / h))  # shorter side (H) to the resolution, rounded up
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    left = (size[1] - resolution) // 2
    x = x[:, :, :, left : left + resolution]
    return x.permute(1, 0, 2, 3) - 0.5  # (C, T, H, W)


# ----------------------------------------------------------------------------- the release's training steps


class ReleaseVQGANModule(VQGANModule):
    """The release's VQGAN training step (the release, "Losses"; its Lightning 1.5 ran ``training_step`` once
    per optimizer): for EACH of the two optimizers the whole VQGAN runs forward in training mode (so the
    codebook averages and BatchNorm statistics move twice per batch) with the other optimizer's
    parameters frozen (Lightning 1.5's ``toggle_optimizer``), a random frame is drawn, and that optimizer
    steps on its loss: first the autoencoder on the generator loss, then the discriminators on the hinge
    loss of the second forward's (detached) reconstruction. Same modules and loss terms as
    :class:`~tats.vqgan.lightning.VQGANModule`; only the control flow is the release's."""

    def _release_step(self, x: torch.Tensor, optimizer_idx: int, step: int) -> tuple[torch.Tensor, dict]:
        opt = self.optimizers()[optimizer_idx]
        self.toggle_optimizer(opt)  # the other optimizer's parameters get no gradient (and no graph)
        out = self.vqgan(x)
        frame_idx = self.loss.random_frame_index(x)
        if optimizer_idx == 0:
            loss, logs = self.loss.generator_loss(x, out["recon"], out["commitment_loss"], step, frame_idx)
        else:
            loss, logs = self.loss.discriminator_loss(x, out["recon"], step, frame_idx)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if optimizer_idx == 0:
            opt.step()
        else:
            _step_uncounted(opt)  # global_step counts batches, as Lightning 1.5's did
        self.untoggle_optimizer(opt)
        return loss.detach(), logs

    def training_step(self, batch, batch_idx):
        x = batch["video"]
        step = self.global_step  # both optimizers see the batch's step (Lightning 1.5)
        ae_loss, logs = self._release_step(x, 0, step)  # its tensors are freed before the second forward
        if self.loss.discriminators_active(step):
            _, d_logs = self._release_step(x, 1, step)
            logs.update(d_logs)
        self.log_dict({f"train/{k}": v.float() for k, v in logs.items()}, on_step=True, on_epoch=False,
                      batch_size=x.shape[0])
        return ae_loss


def release_gpt_logits(gpt: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The release's training forward of the GPT (the release, "Transformer"), no cache: explicit attention
    ``softmax(q k^T / sqrt(head_dim)) v`` masked with each block's stored ``attn.mask`` buffer
    (``masked_fill(mask[:, :, :T, :T] == 0, -inf)``). ``idx (B, T)`` -> logits ``(B, T, V)``."""
    B, T = idx.shape
    x = gpt.drop(gpt.tok_emb(idx) + gpt.pos_emb[:, :T])  # (B, T, E)
    for block in gpt.blocks:
        a = block.attn
        h = block.ln1(x)
        k = a.key(h).view(B, T, a.n_head, -1).transpose(1, 2)  # (B, nh, T, hd)
        q = a.query(h).view(B, T, a.n_head, -1).transpose(1, 2)
        v = a.value(h).view(B, T, a.n_head, -1).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))  # (B, nh, T, T)
        att = att.masked_fill(a.mask[:, :, :T, :T] == 0, float("-inf"))
        att = F.dropout(F.softmax(att, dim=-1), a.attn_drop, gpt.training)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, -1)  # (B, T, E)
        x = x + a.resid_drop(a.proj(y))
        x = x + block.mlp(block.ln2(x))
    return gpt.head(gpt.ln_f(x))


class ReleaseTransformerModule(TransformerModule):
    """:class:`~tats.gpt.lightning.TransformerModule` with the release's forward (:func:`release_gpt_logits`)
    and its loss, ``cross_entropy(logits.reshape(-1, V), target.reshape(-1))`` on the logits as they come."""

    def loss(self, batch):
        idx = self.sequence(batch)  # (B, n_cond + L)
        n_cond = self.config.n_cond_tokens
        logits = release_gpt_logits(self.transformer, idx[:, :-1])[:, n_cond - 1 :]  # (B, L, V)
        target = idx[:, n_cond:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        return loss, target.numel()
