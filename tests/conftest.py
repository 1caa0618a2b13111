"""Shared test set-up: CPU only, few threads, deterministic seeds, paths to the release's files, and
scripts imported from their files (``load_script``).

Tests of one stage live in its folder (``vqgan/``, ``gpt/``, ``sampling/``, ``train/``, ``data/``,
``metrics/``, ``io/``); whole-pipeline and layout checks stay here. Helpers shared by several folders
sit beside this file: ``tiny_models`` (tiny checkpoints), ``reference_impls`` (what results are compared
against), ``numerics``, ``local_http`` / ``file_hosts`` / ``weights_fixtures`` (downloads served from
127.0.0.1, and the real metric weights fetched once).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: Files the TATS release wrote (tests/fixtures/README.md): its checkpoints, its outputs on them, and
#: the key layouts of its state dicts.
FIXTURES = REFERENCE = Path(__file__).resolve().parent / "fixtures"

# OMP_NUM_THREADS, when set, is honoured (the suite must pass on 1 thread as on 2); else at most 2
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip cleanly where no CUDA GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach the network: weights are not fetched on first use unless a test serves them
    from 127.0.0.1 and lifts the switch itself. Subprocesses inherit it."""
    monkeypatch.setenv("TATS_OFFLINE", "1")


@pytest.fixture
def fixtures_dir() -> Path:
    """The release-written fixtures, in every clone (a missing file fails the test that opens it)."""
    return FIXTURES


@pytest.fixture
def reference_dir() -> Path:
    return REFERENCE


def import_script(path: str | Path, name: str | None = None) -> ModuleType:
    """The script at ``path`` (absolute, or relative to the repository root) imported as a module named
    ``name`` (default ``_script_<stem>``): ``scripts/``, ``benchmarks/``, ``datasets/`` and the root
    scripts are not packages."""
    path = Path(path) if Path(path).is_absolute() else ROOT / path
    spec = importlib.util.spec_from_file_location(name or f"_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses in a script look their module up)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """``load_script("scripts/demo.py")`` -> the script's module (see :func:`import_script`)."""
    return import_script


@pytest.fixture
def one_thread():
    """One intra-op thread for the test. Token-by-token decoding is thousands of tiny ops: a second
    thread only adds synchronisation (up to 40x slower on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
