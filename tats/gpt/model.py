"""The time-sensitive GPT of TATS: attention, blocks, a preallocated KV cache.

Module and parameter names follow the release's state dict (``gpt_*_state_dict.tsv`` under the
``transformer.`` prefix: ``tok_emb``, ``pos_emb``, ``blocks.N.{ln1, ln2, attn.{key, query, value,
proj, mask}, mlp.{0, 2}}``, ``ln_f``, ``head``) only for checkpoint compatibility. Decoding uses an
explicit :class:`KVCache` per block: ``set_kv_cache`` allocates ``(B, n_head, max_len, head_dim)``
buffers once and ``forward(idx, input_pos)`` writes new keys/values at their absolute positions (no
per-token ``torch.cat``). While a cache is set, decoding also uses derived weights that are never in
the state dict: query/key/value stacked into one ``(3E, E)`` matmul and, on CPU, the head packed for
the cache's batch size (:func:`cpu_decode_head`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from tats.gpt.config import GPTConfig
from tats.precision import autocast_off


def build_mask(block_size: int, n_unmasked: int = 0) -> torch.Tensor:
    """The attention mask a release block stores, float ``(1, 1, block, block)``, 1 = visible.

    ``n_unmasked = 0``: the causal lower triangle. ``n = n_unmasked > 0`` (the interpolation
    transformer, the release, "Transformer"): on top of the causal triangle every query also sees
    the first ``n + 1`` positions (the condition token and the first latent frame) and the last
    ``n - 1`` positions (the last latent frame without its final token, which is never an input),
    and the last ``n - 1`` queries see nothing of the middle, only those two ends.
    """
    mask = torch.tril(torch.ones(block_size, block_size))
    n = n_unmasked
    if n > 0:
        if 2 * n > block_size:
            raise ValueError(f"n_unmasked={n} leaves no middle in a block of {block_size}")
        tail = block_size - (n - 1)  # first of the last n-1 positions
        mask[:, : n + 1] = 1
        mask[:, tail:] = 1
        mask[tail:, n + 1 : tail] = 0
    return mask.view(1, 1, block_size, block_size)


def weights_version(module: nn.Module) -> tuple[int, ...]:
    """Changes when a parameter is updated in place (its version counter) or replaced (its storage):
    copies derived from the weights (fused, packed, compiled as constants) are stale then."""
    try:
        return tuple(p._version for p in module.parameters())
    except RuntimeError:  # parameters made under inference_mode keep no version counter
        return tuple(p.data_ptr() for p in module.parameters())


def cpu_decode_head(weight: torch.Tensor, batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x (..., E) -> x @ weight.T`` for CPU decoding, with ``weight (vocab, E)`` in a faster layout.

    Measured for a 256 x 16485 head on an AVX2 core: one row is 2.4x faster against the transposed
    ``(E, vocab)`` copy than against the stored weight; from 4 rows oneDNN's linear with the weight
    packed for that batch is 1.4-1.6x faster still (``benchmarks/bench_sampling.py``). Results equal
    the plain matmul within float32 rounding. Falls back to the transposed copy where PyTorch has no
    oneDNN.
    """
    if batch_size >= 4 and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch_size)
            linear = torch.ops.mkldnn._linear_pointwise
            probe = torch.ones(1, weight.shape[1], dtype=weight.dtype)  # these ops are private: check once
            if torch.allclose(linear(probe, packed, None, "none", [], ""), probe @ weight.t(), atol=1e-4):
                return lambda x: linear(x, packed, None, "none", [], "")
        except (AttributeError, RuntimeError):  # a PyTorch without these oneDNN ops
            pass
    weight_t = weight.t().contiguous()  # (E, vocab)
    return lambda x: x @ weight_t


class KVCache(nn.Module):
    """Preallocated keys and values of one attention layer, indexed by absolute position.

    Buffers ``k`` and ``v`` have shape ``(B, n_head, max_len, head_dim)``; they are
    non-persistent so they never reach a checkpoint.
    """

    def __init__(
        self,
        batch_size: int,
        n_head: int,
        max_len: int,
        head_dim: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        shape = (batch_size, n_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v (B, nh, T, hd)`` at positions ``input_pos (T,)``; return the full buffers."""
        if k.shape[0] != self.k.shape[0]:
            raise ValueError(
                f"KV cache was allocated for batch {self.k.shape[0]} but got batch {k.shape[0]}; "
                "call set_kv_cache again"
            )
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v


@dataclass
class DecodingState:
    """What ``set_kv_cache`` installs in a GPT: each block's cache and fused weights, the head and the
    settings. A sampler that keeps its own (a compiled decoder, whose graphs are specialised on these
    tensors) saves it with :meth:`GPT.decoding_state` and puts it back with
    :meth:`GPT.restore_decoding_state`, so other samplers in between cost it nothing."""

    caches: list[KVCache | None]
    fused_qkv: list[tuple[torch.Tensor, torch.Tensor] | None]
    math_steps: list[bool]
    decode_head: Callable[[torch.Tensor], torch.Tensor] | None
    static_kv: bool
    key: tuple | None


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with separate key/query/value/proj Linear layers (release names).

    The stored ``mask`` buffer decides visibility. When it is the plain causal triangle the fast
    path is ``scaled_dot_product_attention(is_causal=True)``; otherwise the boolean mask is passed.
    ``use_sdpa = False`` selects the explicit softmax path (kept for tests: both must agree).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.key = nn.Linear(config.n_embd, config.n_embd)
        self.query = nn.Linear(config.n_embd, config.n_embd)
        self.value = nn.Linear(config.n_embd, config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_drop = config.attn_pdrop
        self.resid_drop = nn.Dropout(config.resid_pdrop)
        self.register_buffer("mask", build_mask(config.block_size, config.n_unmasked))
        self.kv_cache: KVCache | None = None
        # (weight (3E, E), bias (3E,)): query, key, value stacked, built while a KV cache is set.
        self.fused_qkv: tuple[torch.Tensor, torch.Tensor] | None = None
        self.use_sdpa = True
        # One-token decoding steps with explicit math instead of SDPA: inductor fuses q.k, softmax
        # and .v over the cache into one CPU kernel (4x faster than the SDPA kernel it calls).
        self.math_steps = False
        self.is_causal = config.n_unmasked == 0
        # The loaded mask, not the config, decides the kind (as the release: it reads the stored mask).
        self.register_load_state_dict_post_hook(lambda module, _incompatible: module.refresh_mask_kind())

    def fuse_qkv(self, enable: bool = True) -> None:
        """Stack the query/key/value weights for decoding (a copy: the state dict is unchanged).

        Built by ``GPT.set_kv_cache`` and dropped by ``clear_kv_cache``, so it always reflects the
        weights at the time the cache was set.
        """
        if not enable:
            self.fused_qkv = None
            return
        with torch.no_grad():
            weight = torch.cat([self.query.weight, self.key.weight, self.value.weight], dim=0)  # (3E, E)
            bias = torch.cat([self.query.bias, self.key.bias, self.value.bias], dim=0)  # (3E,)
        self.fused_qkv = (weight, bias)

    def refresh_mask_kind(self) -> None:
        """Recompute whether the stored mask is the plain causal triangle."""
        m = self.mask[0, 0]
        self.is_causal = bool(torch.equal(m, torch.tril(torch.ones_like(m))))

    def forward(
        self, x: torch.Tensor, input_pos: torch.Tensor | None = None, kv_len: int | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """``x (B, T, E)`` -> ``(B, T, E)``, or ``(B, 1, E)`` for the last position with ``last_only``
        (keys and values are still written for all T; a cache is required).

        With ``input_pos (T,)`` (sorted absolute positions) the layer's KV cache is written and
        read; ``kv_len`` = ``max(input_pos) + 1`` (computed once per step by :class:`GPT`), or None
        for static shapes (the whole cache with the stored mask rows; for ``torch.compile``).
        """
        B, T, E = x.shape
        math_step = self.math_steps and T == 1  # a one-token decoding step as explicit math
        if self.fused_qkv is not None and input_pos is not None:
            # Decoding: one (E -> 3E) matmul instead of three (E -> E) ones.
            qkv = F.linear(x, *self.fused_qkv).view(B, T, 3, self.n_head, E // self.n_head)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hd)
        else:
            q = self.query(x).view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hd)
            k = self.key(x).view(B, T, self.n_head, -1).transpose(1, 2)
            v = self.value(x).view(B, T, self.n_head, -1).transpose(1, 2)
        mask: torch.Tensor | None = None  # (T, S) bool, True = visible; None = all visible
        causal = False
        if input_pos is None:
            if self.is_causal:
                causal = True
            else:
                mask = self.mask[0, 0, :T, :T] > 0.5
        else:
            if self.kv_cache is None:
                raise RuntimeError("forward(input_pos=...) needs a KV cache: call gpt.set_kv_cache() first")
            k, v = self.kv_cache.update(input_pos, k, v)  # (B, nh, max_len, hd)
            if self.is_causal and kv_len is not None:
                # Slots after the newest position are unwritten (or stale): attend to [0, last].
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
                if T > 1 and T == kv_len:
                    causal = True  # a prefill of positions 0..T-1: the plain causal square
                elif T > 1:
                    mask = self.mask[0, 0, input_pos, :kv_len] > 0.5
            else:
                # Static shapes, or the interpolation mask (whose two ends must already be in the
                # cache, see tats.sampling.hierarchical): the stored rows mask unwritten slots.
                mask = self.mask[0, 0, input_pos, : k.shape[2]] > 0.5
            if math_step:
                k, v = k.to(q.dtype), v.to(q.dtype)  # a float32 step over a bf16 cache: widened in the kernel
            else:
                q = q.to(k.dtype)
            if last_only and T > 1:  # only the last query: it sees every written slot up to its own
                q, causal = q[:, :, -1:], False
                mask = None if mask is None else mask[-1:]
        if self.use_sdpa and not math_step:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=causal,
                dropout_p=self.attn_drop if self.training else 0.0,
            )
        else:
            y = self._explicit_attention(q, k, v, mask, causal)
        y = y.transpose(1, 2).reshape(B, q.shape[2], E)  # (B, T or 1, E)
        return self.resid_drop(self.proj(y))

    def _explicit_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        """softmax(q k^T / sqrt(head_dim)) v with the same masking; ``(B, nh, T, hd)``."""
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])  # (B, nh, T, S)
        if causal:
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        att = F.dropout(att.softmax(dim=-1), self.attn_drop, self.training)
        return att @ v


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1 x)``, then ``x + mlp(ln2 x)``; MLP uses exact GELU.
    ``attn``: the attention module (default the GPT's causal one with its KV cache)."""

    def __init__(self, config: GPTConfig, attn: nn.Module | None = None) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config) if attn is None else attn
        # Indices 0 and 2 carry weights, as in the release's `mlp.0` / `mlp.2` keys.
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.resid_pdrop),
        )

    def forward(
        self, x: torch.Tensor, input_pos: torch.Tensor | None = None, kv_len: int | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """``x (B, T, E)`` -> ``(B, T, E)``; ``last_only`` (with a cache): ``(B, 1, E)``, the last
        position only, after writing every position's keys and values."""
        h = self.attn(self.ln1(x), input_pos, kv_len, last_only=last_only)
        x = (x[:, -1:] if last_only else x) + h
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token + learned absolute position embeddings, ``n_layer`` blocks, ``ln_f``, bias-free head.

    ``forward(idx (B, T)) -> logits (B, T, vocab)``; with ``last_only=True`` only the last
    position's logits ``(B, 1, vocab)`` are computed (sampling never needs the others).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        # Learned positions, absolute within the window (position 0 = first condition token).
        self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd))
        self.drop = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.static_kv = False
        self._cache_key: tuple | None = None  # what the current KV cache was set up with
        # The head for cached decoding on CPU (cpu_decode_head), built with the KV cache.
        self.decode_head: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2 style initialisation, as the release trains from: N(0, 0.02), zero biases.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def block_size(self) -> int:
        return self.pos_emb.shape[1]

    @property
    def is_causal(self) -> bool:
        """True when every block's stored mask is the plain causal triangle."""
        return all(b.attn.is_causal for b in self.blocks)

    def set_attention_impl(self, use_sdpa: bool) -> None:
        """Choose scaled_dot_product_attention (default) or the explicit softmax path."""
        for b in self.blocks:
            b.attn.use_sdpa = use_sdpa

    def set_kv_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        static_shapes: bool | None = None,
        packed_head: bool = True,
        math_steps: bool = False,
    ) -> None:
        """Allocate one :class:`KVCache` per block, ``(B, n_head, max_len, head_dim)`` each.

        ``max_len`` defaults to ``block_size``; device and dtype default to the parameters'.
        ``static_shapes``: every step attends over the whole cache with the stored mask rows
        instead of slicing ``[0, pos]``: fixed shapes (for CUDA graphs), at the cost of attending over
        ``max_len`` slots. None keeps the current ``gpt.static_kv`` setting (False unless set), so
        samplers can be switched by one attribute. ``packed_head=False`` keeps the plain head on CPU
        (a compiled decoder packs its weights itself); ``math_steps`` runs one-token steps' attention
        as explicit math (what inductor fuses best), in the queries' precision: a float32 step widens
        a bfloat16 cache as it reads it.
        """
        if static_shapes is not None:
            self.static_kv = static_shapes
        max_len = self.block_size if max_len is None else max_len
        if max_len > self.block_size + 1:  # one spare slot is allowed (see tats.sampling.compiled)
            raise ValueError(f"max_len={max_len} exceeds the block size {self.block_size}")
        device = self.pos_emb.device if device is None else device
        dtype = self.pos_emb.dtype if dtype is None else dtype
        for b in self.blocks:
            b.attn.kv_cache = KVCache(
                batch_size, self.config.n_head, max_len, self.config.head_dim, device, dtype
            )
            b.attn.fuse_qkv(True)
            b.attn.math_steps = math_steps
        with torch.no_grad():
            on_cpu = self.head.weight.device.type == "cpu"
            packed = on_cpu and packed_head
            self.decode_head = cpu_decode_head(self.head.weight.detach(), batch_size) if packed else None
        self._cache_key = self._cache_settings(batch_size, max_len, device, dtype, packed_head, math_steps)

    def _cache_settings(self, batch_size: int, max_len: int | None, device: torch.device | None,
                        dtype: torch.dtype | None, packed_head: bool, math_steps: bool) -> tuple:
        """What a cache was set up with, the weights' versions included (in-place updates bump them)."""
        return (batch_size, self.block_size if max_len is None else max_len,
                torch.device(self.pos_emb.device if device is None else device),
                self.pos_emb.dtype if dtype is None else dtype, self.static_kv, packed_head, math_steps,
                weights_version(self))

    def ensure_kv_cache(self, batch_size: int, max_len: int | None = None, device: torch.device | None = None,
                        dtype: torch.dtype | None = None, static_shapes: bool | None = None,
                        packed_head: bool = True, math_steps: bool = False) -> None:
        """:meth:`set_kv_cache`, unless the same cache is already set and the weights have not changed
        since (its fused and packed copies are still theirs): one allocation serves every batch of a run."""
        if static_shapes is not None:
            self.static_kv = static_shapes
        wanted = self._cache_settings(batch_size, max_len, device, dtype, packed_head, math_steps)
        if self.blocks[0].attn.kv_cache is None or getattr(self, "_cache_key", None) != wanted:
            self.set_kv_cache(batch_size, max_len, device, dtype, None, packed_head, math_steps)

    def decoding_state(self) -> DecodingState:
        """The current caches, fused weights and decoding settings (see :class:`DecodingState`)."""
        attn = [b.attn for b in self.blocks]
        return DecodingState([a.kv_cache for a in attn], [a.fused_qkv for a in attn],
                             [a.math_steps for a in attn], self.decode_head, self.static_kv, self._cache_key)

    def restore_decoding_state(self, state: DecodingState) -> None:
        """Install a state saved with :meth:`decoding_state` (the same tensors, nothing reallocated)."""
        for b, cache, fused, math_steps in zip(self.blocks, state.caches, state.fused_qkv, state.math_steps):
            b.attn.kv_cache, b.attn.fused_qkv, b.attn.math_steps = cache, fused, math_steps
        self.decode_head, self.static_kv, self._cache_key = state.decode_head, state.static_kv, state.key

    def clear_kv_cache(self) -> None:
        """Free the caches."""
        for b in self.blocks:
            b.attn.kv_cache = None
            b.attn.fuse_qkv(False)
            b.attn.math_steps = False
        self.decode_head = None
        self._cache_key = None

    def forward(
        self,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        last_only: bool = False,
        kv_len: int | None = None,
    ) -> torch.Tensor:
        """Logits of the next token.

        Args:
            idx: token ids ``(B, T)``.
            input_pos: absolute positions ``(T,)`` of ``idx`` in the window; requires a KV cache
                (``set_kv_cache``) and fills it. ``None``: positions ``0..T-1``, no cache.
            last_only: compute the head for the last position only.
            kv_len: ``max(input_pos) + 1`` when the caller knows it (a sampler does), which saves a
                device-to-host sync per step; computed from ``input_pos`` otherwise.

        Returns:
            logits ``(B, T, vocab)``, or ``(B, 1, vocab)`` with ``last_only``. With a KV cache (decoding)
            the head runs in float32 whatever the autocast, so that filtering sees float32 logits.
        """
        T = idx.shape[1]
        if input_pos is None:
            if T > self.block_size:
                raise ValueError(f"input of {T} tokens exceeds the block size {self.block_size}")
            pos = self.pos_emb[:, :T]  # (1, T, E)
        else:
            if input_pos.shape != (T,):
                raise ValueError(f"input_pos must have shape ({T},), got {tuple(input_pos.shape)}")
            pos = self.pos_emb[:, input_pos]  # (1, T, E)
        if input_pos is None or self.static_kv:
            kv_len = None
        elif kv_len is None:  # one host sync per step (not per layer) for the causal cache length
            kv_len = int(input_pos.max()) + 1
        x = self.tok_emb(idx) + pos  # (B, T, E)
        if self.training:
            x = self.drop(x)
        # With a cache, the last block computes only the last position: the earlier ones are needed
        # only as keys and values, which its attention writes before it drops them (a window prefill
        # then skips a quarter of its attention and the last block's MLP for all but one position).
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, input_pos, kv_len, last_only=last_only and input_pos is not None and i == last)
        if last_only:
            x = x[:, -1:]
        if input_pos is None:
            return self.head(self.ln_f(x))  # (B, T or 1, vocab)
        # Decoding: float32 logits even under a bf16 autocast. Rounded to bf16 they tie (2-11% of rows
        # at the maximum for a 16k vocabulary) and top-k keeps more than k tokens.
        with autocast_off(x.device.type):
            ln = self.ln_f
            h = F.layer_norm(x.float(), ln.normalized_shape, ln.weight.float(), ln.bias.float(), ln.eps)
            if self.decode_head is not None:
                return self.decode_head(h)  # (B, T or 1, vocab), the packed CPU head
            return F.linear(h, self.head.weight.float())  # (B, T or 1, vocab)
