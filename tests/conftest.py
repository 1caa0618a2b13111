"""Shared test set-up: CPU only, few threads, deterministic seeds, paths to the reference files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
FIXTURES = REFERENCE / "fixtures"

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
    """The release-written fixtures; tests that need them skip cleanly when shared/ is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"release fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference layouts not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture
def one_thread():
    """One intra-op thread for the test. Token-by-token decoding is thousands of tiny ops: a second
    thread only adds synchronisation (up to 40x slower on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
