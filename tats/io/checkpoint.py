"""Safe checkpoint loading and atomic saving: the only place this project unpickles anything.

Every checkpoint this project reads goes through :func:`load_checkpoint`: ``torch.load`` with
``weights_only=True`` and a minimal allow-list. The release's Lightning-1.5 files pickle an
``argparse.Namespace`` of the training flags (the release, "Checkpoint files"), so that class is
allowed; nothing that can run code is. A file that needs anything else is refused with an error that
names the file and the global, and its payload never executes.

The pretrained metric weights come as plain pickles of numpy arrays (:mod:`tats.io.fetch`); they are
read by :func:`load_numpy_pickle`, an unpickler that rebuilds containers and numpy arrays only; the
release's STFT features (AudioSet-Drums ``*.pickle``) by :func:`load_plain_pickle`, the same
unpickler without the dict requirement.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def safe_globals() -> list[Any]:
    """Classes a checkpoint may contain besides tensors and plain containers: the release's
    ``hyper_parameters["args"]`` Namespace and Lightning 2's AttributeDict (a dict subclass).
    Both are plain attribute bags that run no code when rebuilt. Lightning is imported only here,
    so reading a checkpoint does not pay for importing it up front."""
    allowed: list[Any] = [argparse.Namespace]
    try:
        from lightning_fabric.utilities.data import AttributeDict

        allowed.append(AttributeDict)
    except ImportError:  # pragma: no cover - Lightning is a dependency; loading still works without it
        pass
    return allowed


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, unsafe or of the wrong kind."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """Load a checkpoint with weights-only unpickling and the :func:`safe_globals` allow-list.

    ``mmap=True`` maps the tensors' storage instead of reading it (zip-format files only): a cheap look
    at a large file's structure, as when a download is checked before it enters the cache.
    Raises :class:`CheckpointError` naming ``path`` when the file is missing, truncated, or asks
    for a global outside the allow-list (a pickled code payload is refused, never run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it needs a Python object outside the weights-only allow-list "
            f"({err.args[0].splitlines()[0] if err.args else err}). Only tensors, plain containers "
            "and argparse.Namespace are accepted; the file was not executed."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, expected a checkpoint dict")
    return ckpt


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` with ``torch.save`` atomically: a temporary file in the same folder, flushed
    and fsynced, then renamed over ``path``. A kill mid-save leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def config_to_dict(config: Any) -> dict[str, Any]:
    """A model's config dataclass as the plain dict stored in ``hyper_parameters["config"]``
    (primitives only, so loading needs no pickled class); tuples become lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def config_from_dict(cls: type[T], mapping: Mapping[str, Any], skip_none: bool = False) -> T:
    """The config dataclass ``cls`` from a mapping (ours, or the release's flattened Namespace): keys
    that are no field of ``cls`` are ignored (checkpoints carry extras), and with ``skip_none`` so are
    None values (the field's default applies)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in mapping.items() if k in names and not (skip_none and v is None)})


def hparams_dict(ckpt: Mapping) -> dict:
    """Flatten a checkpoint's hyper-parameters into one plain dict.

    The release stores ``{"args": Namespace(...), ...}``; its Namespace fields are merged in at
    the top level (unknown fields are kept; readers pick what they know).
    """
    hp = dict(ckpt.get("hyper_parameters") or {})
    args = hp.pop("args", None)
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if isinstance(args, Mapping):
        hp = {**args, **hp}
    return hp


def checkpoint_kind(ckpt: Mapping) -> str:
    """Return ``"transformer"``, ``"vqgan"`` or ``"unknown"`` from the state-dict keys."""
    keys = ckpt.get("state_dict", {}).keys()
    if any(k.startswith(("transformer.", "gpt.")) for k in keys):
        return "transformer"
    if any(k.startswith(("encoder.", "vqgan.encoder.")) for k in keys):
        return "vqgan"
    return "unknown"


def expect_kind(ckpt: Mapping, expected: str, path: str | os.PathLike) -> None:
    """Raise a :class:`CheckpointError` saying which kind ``path`` is when it is not ``expected``."""
    kind = checkpoint_kind(ckpt)
    if kind != expected:
        hint = {
            "vqgan": "it is a VQGAN checkpoint (pass it as --vqgan_ckpt / --vqvae)",
            "transformer": "it is a transformer checkpoint (pass it as --gpt_ckpt)",
            "unknown": "its state_dict has neither VQGAN nor transformer weights",
        }[kind]
        raise CheckpointError(f"{path} is not a {expected} checkpoint: {hint}")


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state_dict`` under ``prefix`` (``"vqgan."``, ``"transformer."``, ...), without it."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _safe_frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """numpy's protocol-5 array rebuild (``_frombuffer``), for plain bytes only: a copy, so the
    array is writable as an unpickled one is."""
    if not isinstance(buffer, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
        raise pickle.UnpicklingError(f"array buffer of type {type(buffer).__name__} is not allowed")
    return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape, order=order).copy()


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it to carry bytes; other codecs are refused."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed")
    return text.encode("latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds plain containers, scalars and numpy arrays; refuses every other global (no code runs).

    Plain containers (dict, list, tuple, str, bytes, numbers) need no global at all; the allowed
    globals are numpy's own array/dtype/scalar rebuilders for pickle protocols 2 to 5, under their
    numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) module names.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
            ("numpy.core.multiarray", "scalar"): _np_scalar,
            ("numpy._core.multiarray", "scalar"): _np_scalar,
            ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
            ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
            ("_codecs", "encode"): _latin1_encode,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed (numpy arrays and plain containers only)"
            )
        return allowed[(module, name)]


# numpy's own reconstructors, taken from its reduce tuples (whichever module they live in)
_np_reconstruct = np.zeros(0).__reduce__()[0]
_np_scalar = np.float32(0).__reduce__()[0]


def load_plain_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a file that may contain only plain containers, scalars and numpy arrays.

    Anything else (a class, a function, a ``__reduce__`` payload) is refused before it can run:
    ``pickle.UnpicklingError`` naming ``path`` and the global it asked for. A truncated or
    non-pickle file raises ``pickle.UnpicklingError`` naming ``path`` too.
    """
    with open(path, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f).load()
        except pickle.UnpicklingError as err:
            raise pickle.UnpicklingError(f"refusing to unpickle {path}: {err}") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError) as err:
            raise pickle.UnpicklingError(f"cannot unpickle {path}: {type(err).__name__}: {err}") from None


def load_numpy_pickle(path: str | os.PathLike) -> dict:
    """Unpickle a file that may contain only nested containers and numpy arrays, holding a dict.

    Raises ``pickle.UnpicklingError`` (with the file name) if it asks for any other class.
    """
    obj = load_plain_pickle(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict of numpy arrays, got {type(obj).__name__}")
    return obj
