"""Shared fixtures: tiny texts and corpus files, so every test stays fast on a small CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests run tiny models on a shared 2-core machine: one intra-op thread is faster
# than two fighting over the cores, and it keeps float results repeatable.
torch.set_num_threads(1)

TINY_TEXT = (
    "the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met on a mat.\nthe end of the tale is near.\n"
) * 12  # ~1,250 characters, 48 lines, a vocabulary of ~20 characters


@pytest.fixture(autouse=True, scope="session")
def _token_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every run of the test session caches its tokenized corpora in a temporary directory, never in ~/.cache."""
    os.environ["CHARLM_CACHE_DIR"] = str(tmp_path_factory.mktemp("token-cache"))


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """A short, repetitive, line-structured English text (~1.2k chars)."""
    return TINY_TEXT


@pytest.fixture
def tiny_corpus(tmp_path: Path, tiny_text: str) -> Path:
    """`tiny_text` written as a UTF-8 file in tmp_path."""
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A not-yet-existing checkpoint directory path in tmp_path."""
    return tmp_path / "run"


@pytest.fixture(scope="session")
def held_out_text():
    """f(path, valid_fraction=0.1): the validation text the token cache holds out of one corpus file."""
    from charlm.data.corpus import corpus_files, split_offset

    def held_out(path: Path, valid_fraction: float = 0.1) -> str:
        cut = split_offset(corpus_files([path]), valid_fraction)
        return path.read_bytes()[cut:].decode("utf-8")

    return held_out
