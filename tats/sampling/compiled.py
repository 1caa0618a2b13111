"""Decoding with ``torch.compile``: the prefill and the one-token step, each with its draw, as graphs.

A step (embedding, every layer with its KV-cache write and attention, the last position's head and
the draw of :func:`tats.sampling.filtering.draw_with_uniform`) is one graph, so a token costs its
arithmetic and memory traffic, not Python and dispatch. The graphs and their KV cache are built once
per GPT, batch size, precision and draw rule (:func:`decoder_for`) and reused for every window and
batch: on the CPU inductor's C++ GEMM templates over a dynamic window length, on CUDA CUDA graphs over
a fixed-size cache. Backend by backend: docs/sampling.md, "How compiled decoding works".
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from tats.gpt.model import GPT, DecodingState, weights_version
from tats.precision import autocast_off
from tats.sampling.filtering import DrawRule, draw_full_with_uniform, draw_with_uniform

__all__ = ["CompiledDecoder", "decoder_for"]

#: inductor settings for the CPU graphs: frozen weights (prepacked for the GEMM kernels) and GEMM
#: templates, which beat MKL's small-M GEMM 4-9x at batch 1-16 (the decoding regime). ``freezing`` is
#: read when dynamo traces as well as when inductor compiles, so it is set around the calls
#: (:meth:`CompiledDecoder.settings`), not globally: that would freeze any other compiled module
#: evaluated without gradients, such as a model under training.
CPU_INDUCTOR = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN",
                "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False,
                "cpp_wrapper": True}


class _Prefill(nn.Module):
    """``idx (B, T)`` at ``input_pos (T,)`` -> ``(next tokens (B,), tied rows (B,))``; the float32
    logits ``(B, V)`` are written into ``logits_out`` (preallocated: a fresh 16k-wide row per token
    would be a new allocation every step).

    A module (not a function taking the GPT) so that inductor sees the weights as attributes it can
    freeze and prepack."""

    def __init__(self, gpt: GPT, rule: DrawRule) -> None:
        super().__init__()
        self.gpt, self.rule = gpt, rule

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor, length: torch.Tensor | None,
                u: torch.Tensor, logits_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        kv_len = None if length is None else length.shape[0]
        logits = self.gpt(idx, input_pos=input_pos, last_only=True, kv_len=kv_len)[:, -1]  # (B, V) fp32
        tokens, tied = draw_with_uniform(logits, u, self.rule, exact_ties=logits.device.type != "cpu")
        if logits_out is not None:  # CPU only: CUDA graphs refuse a graph that writes into an input
            logits_out.copy_(logits)
        return tokens, tied


class _Step(_Prefill):
    """The one-token step: ``token (B,)`` at ``input_pos (1,)``; otherwise as :class:`_Prefill`.

    ``float32_weights``: the step runs without autocast (float32 weights and arithmetic) and widens the
    bfloat16 KV cache as it reads it (:func:`float32_step_weights`)."""

    def __init__(self, gpt: GPT, rule: DrawRule, float32_weights: bool = False) -> None:
        super().__init__(gpt, rule)
        self.float32_weights = float32_weights

    def forward(self, token: torch.Tensor, input_pos: torch.Tensor, length: torch.Tensor | None,
                u: torch.Tensor, logits_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_off("cpu") if self.float32_weights else contextlib.nullcontext():
            return super().forward(token[:, None], input_pos, length, u, logits_out)


def float32_step_weights(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether a bf16 compiled step keeps float32 weights: on CPUs without AMX. There, inductor's bf16
    matrix kernels widen every weight to float32 in the inner loop, and for a few rows they ran slower
    than its float32 kernels (4 x 256 layers: 37 against 17 us for a 256 -> 1024 product), so the
    memory saved by bf16 weights is lost. The KV cache, the larger read at long windows, stays bf16, and
    the prefill (compute-bound) runs under bf16 autocast either way."""
    if device.type != "cpu" or dtype is None or dtype == torch.float32:
        return False
    amx = getattr(getattr(torch._C, "_cpu", None), "_is_amx_tile_supported", lambda: False)
    return not amx()


@dataclass
class CompiledDecoder:
    """The compiled prefill and step of one GPT for one batch size, device, precision and draw rule."""

    gpt: GPT
    batch_size: int
    rule: DrawRule
    dtype: torch.dtype | None
    prefill_fn: Callable[..., Any]
    step_fn: Callable[..., Any]
    version: tuple[int, ...]
    static: bool
    state: DecodingState  # the KV cache and fused weights the graphs were traced with
    logits: torch.Tensor | None  # (B, V) float32, the last step's logits on the CPU (read for tied rows);
    # None on CUDA, where ties are settled inside the graph and a graph writing into an input buffer
    # would run without CUDA graphs (inductor skips them for mutated inputs)

    def install(self) -> CompiledDecoder:
        """Put this decoder's cache back into the GPT (another sampler may have set its own since):
        the same tensors, so the graphs' guards hold and nothing recompiles."""
        self.gpt.restore_decoding_state(self.state)
        return self

    def _length(self, kv_len: int) -> torch.Tensor | None:
        if self.static:
            return None
        length = torch.empty(kv_len, 0)  # no storage: only its size is read
        torch._dynamo.maybe_mark_dynamic(length, 0)
        return length

    def _settle(self, tokens: torch.Tensor, tied: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if tokens.device.type != "cpu":  # ties were settled in the graph
            return tokens.clone()  # CUDA graphs reuse their output buffers on the next replay
        if bool(tied.any()):  # free on the CPU: the exact full-vocabulary draw for those rows
            tokens = tokens.clone()
            tokens[tied] = draw_full_with_uniform(self.logits[tied], u[tied], self.rule)
        return tokens

    def settings(self) -> contextlib.AbstractContextManager:
        """The inductor settings these graphs compile with, for the ``with`` block that runs them."""
        return contextlib.nullcontext() if self.static else torch._inductor.config.patch(CPU_INDUCTOR)

    def warm(self) -> contextlib.AbstractContextManager:
        """A ``with`` block for the steps after a window's first (which compiled the step if needed):
        dynamo then checks only the guards that can tell graphs apart, the inputs' tensor properties,
        and skips the ones on the module, its weights and the draw rule (about 100 us per token at
        4 x 256). Those cannot change inside a window: the weights are checked when the decoder is
        fetched (:func:`decoder_for`), and a step that would need a new graph raises. (``set_stance``
        takes effect when called, so each block needs a fresh one: call this in the ``with``.)"""
        return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)

    def prefill(self, idx: torch.Tensor, input_pos: torch.Tensor, kv_len: int,
                u: torch.Tensor) -> torch.Tensor:
        """Fill the cache at ``input_pos`` with ``idx (B, P)`` and draw the next token ``(B,)``."""
        return self._settle(*self.prefill_fn(idx, input_pos, self._length(kv_len), u, self.logits), u)

    def step(self, token: torch.Tensor, input_pos: torch.Tensor, kv_len: int,
             u: torch.Tensor) -> torch.Tensor:
        """Feed ``token (B,)`` at ``input_pos (1,)`` and draw the next token ``(B,)``."""
        return self._settle(*self.step_fn(token, input_pos, self._length(kv_len), u, self.logits), u)


#: Compiled decoders kept per GPT (least recently used dropped first): two serve a long video whose
#: first window draws with ``top_k_init`` and the rest with ``top_k``. Decoders of one batch size and
#: precision share one KV cache; each kept cache is ``block_size x batch`` per layer (TATS-base in bf16 at
#: batch 48: about 4.5 GiB), so a cache per decoder would grow with every rule and ragged batch.
MAX_DECODERS = 2


def decoder_for(gpt: GPT, batch_size: int, rule: DrawRule,
                dtype: torch.dtype | None = None) -> CompiledDecoder:
    """A :class:`CompiledDecoder` of ``gpt`` for this precision and draw rule with room for
    ``batch_size`` rows: built (and its KV cache allocated) on first use, then reused while the weights
    are unchanged. A decoder for a larger batch serves a smaller one (a ragged last batch): the caller
    pads its rows to ``decoder.batch_size`` (:func:`tats.sampling.core.generate_tokens` does).

    At most :data:`MAX_DECODERS` are kept. The graphs compile lazily on their first call; a warm-up
    before timing is up to the caller.
    """
    device = gpt.pos_emb.device
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"compiled decoding runs on CPU and CUDA devices, not {device.type}: sample without "
                         "--compile there")
    decoders: list[CompiledDecoder] = gpt.__dict__.setdefault("_compiled_decoders", [])
    version = weights_version(gpt)  # frozen into the graphs as constants
    decoders[:] = [d for d in decoders if d.version == version]  # stale graphs and their caches go
    fits = [d for d in decoders if (d.rule, d.dtype) == (rule, dtype) and d.batch_size >= batch_size]
    if fits:
        decoder = min(fits, key=lambda d: d.batch_size)
        decoders.remove(decoder)
        decoders.append(decoder)  # most recently used last
        return decoder.install()
    static = device.type == "cuda"
    shared = next((d for d in decoders if (d.batch_size, d.dtype) == (batch_size, dtype)), None)
    if shared is not None:
        shared.install()  # the same cache tensors: one cache for both rules
    else:
        _set_cache(gpt, batch_size, dtype, static)
    if device.type == "cuda":
        compile_kw: dict[str, Any] = {"mode": "reduce-overhead", "fullgraph": True}
    else:
        compile_kw = {"fullgraph": True, "dynamic": False}
    step = _Step(gpt, rule, float32_step_weights(device, dtype))
    decoder = CompiledDecoder(gpt, batch_size, rule, dtype, _compile(_Prefill(gpt, rule), compile_kw),
                              _compile(step, compile_kw), version, static,
                              gpt.decoding_state(),
                              None if static else torch.empty(batch_size, gpt.config.vocab_size))
    decoders.append(decoder)
    del decoders[:-MAX_DECODERS]
    return decoder


def _compile(module: nn.Module, compile_kw: dict[str, Any]) -> Callable[..., Any]:
    """``torch.compile`` of ``module.forward`` through a copy of its code object. Dynamo keeps its graphs,
    and the guards it checks before each call, on the code object it compiled: with a copy each decoder has
    a cache of its own, so a step checks one graph's guards however many decoders (batch sizes, rules,
    precisions) the process holds; a shared code object would check them one after the other (about
    80 us per extra graph and token, measured at batch 1)."""
    forward = type(module).forward
    own = types.FunctionType(forward.__code__.replace(), forward.__globals__, forward.__name__,
                             forward.__defaults__, forward.__closure__)
    return torch.compile(types.MethodType(own, module), **compile_kw)


def _set_cache(gpt: GPT, batch_size: int, dtype: torch.dtype | None, static: bool) -> None:
    # With a dynamic length, one spare slot keeps every length below the cache's: a length equal to it
    # makes the slice a no-op that the graph would specialise on (one more compile at the last token).
    # A model with the interpolation mask reads the stored mask rows over the whole cache instead.
    spare = 0 if static or not gpt.is_causal else 1
    gpt.set_kv_cache(batch_size, max_len=gpt.block_size + spare,
                     dtype=dtype if dtype is not None else gpt.pos_emb.dtype,
                     static_shapes=static, packed_head=False, math_steps=not static)
