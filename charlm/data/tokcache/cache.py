"""Finding a corpus's ids in the token cache, or building them into it (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from charlm.data.corpus import CorpusFile, PathLike, corpus_files, split_offset
from charlm.data.tokcache.build import (
    Fit,
    Progress,
    Source,
    build_entry,
    cache_errors,
    locked,
    make_cache_dir,
    remove_stale,
)
from charlm.data.tokcache.entry import FORMAT_VERSION, TokenizedCorpus, hash_file, mapped, open_entry, tokenizer_sha
from charlm.data.tokenizers import KINDS, Tokenizer
from charlm.errors import ConfigError, CorpusError, TokenizerError


def tokenized_corpus(
    corpus: Sequence[PathLike],
    *,
    valid: Sequence[PathLike] = (),
    valid_fraction: float = 0.1,
    level: str = "char",
    tokenizer_options: dict[str, Any] | None = None,
    tokenizer: Tokenizer | None = None,
    encoding_errors: str = "strict",
    cache_dir: PathLike,
    exclude: Sequence[PathLike] = (),
    progress: Progress | None = None,
) -> TokenizedCorpus:
    """The ids of a corpus, from the cache in `cache_dir` or tokenized into it (see the package docstring).

    `corpus`/`valid`: files and directories as `read_corpus` takes them; `exclude`:
    paths directory expansion skips (pass the run's output directory; `cache_dir`
    is always skipped). `level` and `tokenizer_options` choose the tokenizer to fit
    on the training part; a given `tokenizer` (a resumed run) is used as it is.
    `progress(phase, done, total)` is called as the one-time passes read the
    corpus ("fitting", then "encoding"; bytes on disk), never for a reused entry.
    Raises `CorpusError` for bad corpus files, `ConfigError` for a split that
    leaves a part (nearly) empty or a cache directory that cannot be written.
    """
    cache_dir = Path(cache_dir)
    level = tokenizer.kind if tokenizer is not None else level
    if level not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {level!r}; choose {', '.join(KINDS)}")
    if not valid and not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid fraction must be in (0, 1), got {valid_fraction}; pass e.g. --valid-fraction 0.1")
    skip = [*exclude, cache_dir]
    files = corpus_files(corpus, exclude=skip)
    valid_files = corpus_files(valid, exclude=skip) if valid else []
    cut = sum(f.size for f in files) if valid_files else split_offset(files, valid_fraction)
    if cut == 0:
        raise ConfigError(
            f"valid fraction {valid_fraction} leaves no training text before the cut; "
            "lower --valid-fraction or use a longer corpus"
        )
    source = Source(files, valid_files, cut, encoding_errors)
    options = {k: v for k, v in sorted((tokenizer_options or {}).items()) if v is not None}
    content = _content_hash(files, valid_files)
    split = None if valid_files else valid_fraction
    fit_key = _key(content, split, {"fit": level, "options": options}, encoding_errors)
    keys = [fit_key]
    if tokenizer is not None:  # the entry fitted for these options serves when it holds this very tokenizer
        keys.append(_key(content, split, {"tokenizer": tokenizer_sha(tokenizer)}, encoding_errors))
    for key in keys:
        if (found := open_entry(cache_dir / key, key, tokenizer)) is not None:
            return _checked(found)
    key = keys[-1]
    with cache_errors(cache_dir):
        make_cache_dir(cache_dir)
        with locked(cache_dir, key):
            remove_stale(cache_dir, key)
            if (found := open_entry(cache_dir / key, key, tokenizer)) is not None:  # built while we waited
                return _checked(found)
            meta, tok = build_entry(cache_dir, key, source, tokenizer or Fit(level, options), progress)
    return _checked(mapped(cache_dir / key, meta, tok, reused=False))


def shard(ids: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank `rank`'s contiguous 1/world_size of the ids (equal sizes, the remainder dropped): a view, no copy."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    n = len(ids) // world_size
    return ids[rank * n : (rank + 1) * n]


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/charlm/tokens, or ~/.cache/charlm/tokens: a cache shared by every run of this user."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charlm" / "tokens"


def _checked(found: TokenizedCorpus) -> TokenizedCorpus:
    """The entry, once both parts are known to hold enough tokens to train and validate."""
    if len(found.train) < 2:
        raise ConfigError(
            f"the training text has {len(found.train)} tokens; use a longer corpus or a smaller --valid-fraction"
        )
    if len(found.valid) < 2:
        raise ConfigError(
            "the validation text has fewer than 2 tokens; use a larger --valid-fraction or a longer --valid file"
        )
    return found


def _content_hash(files: Sequence[CorpusFile], valid_files: Sequence[CorpusFile]) -> str:
    """SHA-256 over every file's size and bytes, corpus then validation files (read in blocks)."""
    h = hashlib.sha256()
    for part in (files, valid_files):
        h.update(len(part).to_bytes(8, "little"))
        for f in part:
            h.update(f.size.to_bytes(8, "little"))
            try:
                hash_file(h, f.path)
            except OSError as exc:
                raise CorpusError(f"cannot read {f.path}: {exc.strerror}; check its permissions") from None
    return h.hexdigest()


def _key(content: str, valid_fraction: float | None, tokenizer: dict[str, Any], errors: str) -> str:
    desc = {
        "format": FORMAT_VERSION,
        "content": content,
        "valid_fraction": valid_fraction,
        "tokenizer": tokenizer,
        "errors": errors,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode("utf-8")).hexdigest()[:32]
