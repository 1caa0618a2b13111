"""Lazy package attributes (PEP 562), so that ``import tats``, ``import tats.data`` and
``import tats.metrics`` stay cheap: a public name's module is imported on first access."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Callable


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` serving ``names`` (``{name: module it lives in}``)."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
