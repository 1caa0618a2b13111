"""The time-sensitive transformer: config, model (attention, blocks, KV cache), token layouts, loading;
and the masked-token model over the same codes (:mod:`tats.gpt.masked`).

Light imports only; ``tats.gpt.load`` (which pulls in the VQGAN) is imported on use.
"""

from tats.gpt.config import GPTConfig
from tats.gpt.masked import MaskedConfig, MaskedTransformer
from tats.gpt.model import GPT, KVCache, build_mask


def load_transformer(*args, **kwargs):
    """See :func:`tats.gpt.load.load_transformer`."""
    from tats.gpt.load import load_transformer as _load

    return _load(*args, **kwargs)


__all__ = ["GPT", "GPTConfig", "KVCache", "MaskedConfig", "MaskedTransformer", "build_mask",
           "load_transformer"]
