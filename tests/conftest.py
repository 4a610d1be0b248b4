"""Shared fixtures: small questions and samples built in the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import (  # noqa: F401 (re-exported)
    CALM_MEDQA,
    CALM_REFERENCE,
    SHARED,
    make_samples,
)
from tests.tiny_model import build_tiny_model


def released(folder: Path) -> Path:
    """``folder`` of CALM's released data, or the test skipped with the reason."""
    if not folder.is_dir():
        pytest.skip(f"CALM's released data is not beside the project ({folder} missing); "
                    "a user's clone has no ../shared")
    return folder


@pytest.fixture
def calm_reference() -> Path:
    """CALM's released X-CSQA files (samples, pairs, test questions)."""
    return released(CALM_REFERENCE)


@pytest.fixture
def calm_medqa() -> Path:
    """CALM's released MedQA test files, one per language."""
    return released(CALM_MEDQA)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A saved 2-layer Llama with a locally trained byte-level BPE tokenizer and chat template
    (built once per test session; tests read it, never write into it)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def sharp_model(tmp_path_factory) -> Path:
    """The tiny model with larger weights: its output depends on every position and it
    answers differently per language, so a pipeline run has votes, ties and pairs."""
    return build_tiny_model(tmp_path_factory.mktemp("sharp-llama"), init_range=0.5)


@pytest.fixture
def hub_offline(tmp_path, monkeypatch):
    """No network for ``datasets`` and ``huggingface_hub``, and ``datasets``' cache under
    tmp_path, whatever the machine has: the hub code path runs on local copies only."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
