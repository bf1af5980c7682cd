"""The kinds by name: fit one, rebuild one from its data, load one from a directory."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from charlm.data.tokenizers.base import FORMAT, SUBWORD_MODEL_FILE, TOKENIZER_FILE, Tokenizer
from charlm.data.tokenizers.char import CharTokenizer
from charlm.data.tokenizers.subword import SubwordTokenizer
from charlm.data.tokenizers.word import WordTokenizer
from charlm.errors import TokenizerError, one_line

KINDS: dict[str, type[Tokenizer]] = {"char": CharTokenizer, "word": WordTokenizer, "subword": SubwordTokenizer}


def fit_tokenizer(kind: str, text: str, **options: Any) -> Tokenizer:
    """Fit a tokenizer of `kind` on training text; options set to None take their defaults."""
    cls, options = _kind_and_options(kind, options)
    return cls.fit(text, **options)


def fit_tokenizer_stream(kind: str, chunks: Iterable[str], *, size: int | None = None, **options: Any) -> Tokenizer:
    """Fit a tokenizer of `kind` on training text given as chunks (e.g. `corpus.iter_corpus_chunks`), in one pass.

    Gives the tokenizer that `fit_tokenizer` gives on the joined chunks, however they
    are cut. Memory is bounded by the chunk size and the vocabulary (word and subword
    chunks are re-cut at a space or line end, so a word or a line longer than a chunk
    is held whole). `size` is the text's length in UTF-8 bytes, or an upper bound
    such as the files' size on disk; the subword kind needs it to choose, before
    reading, which lines to train on.
    """
    cls, options = _kind_and_options(kind, options)
    return cls.fit_chunks(chunks, size=size, **options)


def _kind_and_options(kind: str, options: dict[str, Any]) -> tuple[type[Tokenizer], dict[str, Any]]:
    cls = KINDS.get(kind)
    if cls is None:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose {', '.join(KINDS)}")
    options = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(options) - set(cls.options))
    if extra:
        takes = ", ".join(cls.options) or "no options"
        raise TokenizerError(
            f"option {', '.join(extra)} does not apply to the {kind} tokenizer (it takes {takes}); leave it out"
        )
    return cls, options


def tokenizer_from_dict(d: Any) -> Tokenizer:
    """Rebuild any tokenizer from `to_dict` data, dispatching on d["kind"]."""
    if not isinstance(d, dict):
        raise TokenizerError("tokenizer data is not a JSON object; re-train or restore the checkpoint")
    if d.get("format") != FORMAT:
        raise TokenizerError(
            f"tokenizer format {d.get('format')!r} is not one this charlm reads ({FORMAT}); "
            "use a matching charlm or re-train"
        )
    cls = KINDS.get(d.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise TokenizerError(f"unknown tokenizer kind {d.get('kind')!r}; expected one of {', '.join(KINDS)}")
    try:
        return cls._from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TokenizerError(
            f"{cls.kind} tokenizer data is corrupt ({type(exc).__name__}: {one_line(str(exc))}); re-train or restore it"
        ) from None


def load_tokenizer(directory: str | os.PathLike, *, locate: Callable[[str], Path] | None = None) -> Tokenizer:
    """Read what `Tokenizer.save` wrote in `directory`.

    `locate(name)` says where each file is, for a directory whose files may be in
    transit (a checkpoint directory while a new run is swapped in); default DIR/name.
    """
    directory = Path(directory)
    locate = locate or (lambda name: directory / name)
    path = locate(TOKENIZER_FILE)
    if not path.is_file():
        raise TokenizerError(f"no {TOKENIZER_FILE} in {directory}; pass a checkpoint directory written by charlm train")
    try:
        d = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise TokenizerError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path} is corrupt ({one_line(str(exc))}); re-train or restore the checkpoint") from None
    if isinstance(d, dict) and d.get("kind") == SubwordTokenizer.kind and "model" not in d:
        d = {**d, "model": base64.b64encode(_read_model_file(locate(SUBWORD_MODEL_FILE), d)).decode("ascii")}
    return tokenizer_from_dict(d)


def _read_model_file(path: Path, d: dict[str, Any]) -> bytes:
    # a fixed name (tokenizer.model): the JSON never chooses which file is read
    try:
        model = path.read_bytes()
    except FileNotFoundError:
        raise TokenizerError(f"{path} is missing (the subword model); restore it or re-train") from None
    except OSError as exc:
        raise TokenizerError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    if d.get("model_sha256") not in (None, hashlib.sha256(model).hexdigest()):
        raise TokenizerError(
            f"{path} does not match {TOKENIZER_FILE} (checksum differs); restore both files from the same run"
        )
    return model
