"""Reading a checkpoint directory back: its description, tokenizer and model, for inference or to resume.

A reader that crosses the moment a new run's files are swapped in (`charlm.checkpoint.store`)
reads again, so it never pairs one run's tokenizer with another's weights.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from charlm import __version__
from charlm.checkpoint.layout import ARPA, BEST, FORMAT, FORMAT_VERSION, LAST, META_FILE, STAGING, SWAP, locate
from charlm.checkpoint.tensors import load_model_tensors, load_tensors
from charlm.data import Tokenizer, load_tokenizer
from charlm.errors import CharlmError, CheckpointError
from charlm.models import (
    MODEL_KINDS,
    KneserNeyModel,
    LanguageModel,
    LMConfig,
    RNNLanguageModel,
    config_from_dict,
    token_names,
)


@dataclass
class CheckpointInfo:
    """What a checkpoint directory says about itself (no weights)."""

    path: Path
    model_config: LMConfig
    train_config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_kind(self) -> str:
        """One of MODEL_KINDS (checkpoint.json's model_kind; absent in checkpoints of older charlm: "rnn")."""
        return str(self.meta.get("model_kind", "rnn"))

    @property
    def run_id(self) -> str | None:
        return self.meta.get("run_id")


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """Identity of a tokenizer's data, recorded in checkpoint.json to catch files of two runs mixed."""
    return hashlib.sha256(json.dumps(tokenizer.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()


def open_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read and check checkpoint.json. `path` is the directory or a file inside it."""
    p = Path(path)
    if p.is_file() and p.suffix == ".safetensors":
        p = p.parent
    if not p.exists():
        raise CheckpointError(
            f"checkpoint {p} does not exist; pass the directory `charlm train` wrote (e.g. checkpoints/tinyshakespeare)"
        )
    meta_path = locate(p, META_FILE) if p.is_dir() else p / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{p} is not a charlm checkpoint (no {META_FILE}); pass the directory `charlm train` wrote"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{p / META_FILE} is corrupt ({exc.__class__.__name__}); train again or restore it"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{p / META_FILE} is not a charlm checkpoint description")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format version {version}, this charlm {__version__} reads version {FORMAT_VERSION}; "
            "use the charlm version that wrote it"
        )
    kind = meta.get("model_kind", "rnn")
    if kind not in MODEL_KINDS:
        raise CheckpointError(
            f"{p / META_FILE} holds a model of kind {kind!r}, which this charlm {__version__} cannot read; "
            "use the charlm version that wrote it"
        )
    try:
        model_config = config_from_dict(kind, meta["model"])
    except (KeyError, TypeError, CharlmError) as exc:
        raise CheckpointError(f"{p / META_FILE} has invalid model options ({exc}); the checkpoint is corrupt") from None
    return CheckpointInfo(p, model_config, meta.get("train", {}), meta)


def open_tokenizer(info: CheckpointInfo) -> Tokenizer:
    """The run's tokenizer, checked against the fingerprint its checkpoint.json recorded."""
    try:
        tokenizer = load_tokenizer(info.path, locate=lambda name: locate(info.path, name))
    except CharlmError as exc:
        raise CheckpointError(f"{info.path}: {exc}") from None
    recorded = info.meta.get("tokenizer", {}).get("sha256")
    if recorded is not None and recorded != tokenizer_fingerprint(tokenizer):
        raise MixedRuns(
            f"{info.path}: tokenizer.json belongs to another run than {META_FILE}; the checkpoint is corrupt"
        )
    if tokenizer.vocab_size != info.model_config.vocab_size:
        raise CheckpointError(
            f"{info.path}: tokenizer has {tokenizer.vocab_size} ids but the model {info.model_config.vocab_size}; "
            "the checkpoint is corrupt"
        )
    return tokenizer


class NotALanguageModel(CheckpointError):
    """The checkpoint holds a model trained for another task (checkpoint.json's "task")."""


class MixedRuns(CheckpointError):
    """Files of two runs met: a reader crossed a swap (read again) or the directory was edited by hand."""


def build_model(
    info: CheckpointInfo, which: str = "best", device: str | torch.device = "cpu", verify: bool = True
) -> tuple[RNNLanguageModel, dict[str, Any]]:
    """The model with weights from best (falling back to last when no validation ran yet) or last.

    verify=False loads weights that do not match their recorded digest (a damaged file).
    """
    if which not in ("best", "last"):
        raise CheckpointError(f"unknown checkpoint {which!r}; choose best or last")
    if info.model_kind != RNNLanguageModel.kind:
        raise CheckpointError(f"{info.path} holds a Kneser-Ney model, not weights; load it with load_for_inference")
    path = locate(info.path, BEST if which == "best" else LAST)
    if which == "best" and not path.is_file():
        path = locate(info.path, LAST)
    tensors, metadata = load_tensors(path, verify)
    model = RNNLanguageModel.from_config(info.model_config)
    load_model_tensors(model, tensors, path)
    try:
        meta = json.loads(metadata.get("charlm", "{}"))
    except json.JSONDecodeError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    run_id = meta.get(
        "run_id", meta.get("trainer", {}).get("run_id") if isinstance(meta.get("trainer"), dict) else None
    )
    if info.run_id is not None and run_id is not None and run_id != info.run_id:
        raise MixedRuns(f"{path} belongs to another run than {info.path / META_FILE}; the checkpoint is corrupt")
    return model.to(device).eval(), meta


def build_ngram_model(info: CheckpointInfo, tokenizer: Tokenizer, device: str | torch.device = "cpu") -> KneserNeyModel:
    """A Kneser-Ney run's model, read from its ARPA file (text: nothing is unpickled)."""
    path = locate(info.path, ARPA)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, train again or pick another")
    model = KneserNeyModel.from_arpa(path, token_names(tokenizer))
    if model.config != info.model_config:
        raise MixedRuns(f"{path} belongs to another run than {info.path / META_FILE}; the checkpoint is corrupt")
    return model.to(device).eval()


def _load_network(
    info: CheckpointInfo, tokenizer: Tokenizer, which: str, device: str | torch.device, verify: bool
) -> LanguageModel:
    return build_model(info, which, device, verify)[0]


def _load_ngram(
    info: CheckpointInfo, tokenizer: Tokenizer, which: str, device: str | torch.device, verify: bool
) -> LanguageModel:
    return build_ngram_model(info, tokenizer, device)  # one model (its ARPA file): `which` does not apply


# how each kind of model is read back: weights (best or last) into its network, or its ARPA file
_LOADERS: dict[str, Callable[[CheckpointInfo, Tokenizer, str, str | torch.device, bool], LanguageModel]] = {
    RNNLanguageModel.kind: _load_network,
    KneserNeyModel.kind: _load_ngram,
}


def load_for_inference(
    path: str | Path, which: str = "best", device: str | torch.device = "cpu", verify: bool = True
) -> tuple[LanguageModel, Tokenizer, CheckpointInfo]:
    """Everything needed to generate or evaluate: (model in eval mode, tokenizer, info).

    A Kneser-Ney run has one model (its ARPA file): `which` does not apply to it.
    verify=False loads weights that do not match their recorded SHA-256 (`build_model`).

    A reader that crosses the moment a new run's files are swapped in reads again,
    so it never pairs one run's tokenizer with another's weights.
    """
    for attempt in range(3):
        try:
            info = open_checkpoint(path)
            if info.model_kind not in _LOADERS:  # a task's model (a tagger, a classifier), not a language model
                raise NotALanguageModel(
                    f"{info.path} holds a {info.model_kind} model, not a language model; "
                    f"use it with `charlm {info.model_kind}` or `charlm evaluate` (charlm.load returns its handle)"
                )
            tokenizer = open_tokenizer(info)
            return _LOADERS[info.model_kind](info, tokenizer, which, device, verify), tokenizer, info
        except NotALanguageModel:
            raise
        except (MixedRuns, CheckpointError) as exc:
            if attempt == 2 or not (isinstance(exc, MixedRuns) or _swapping(Path(path))):
                raise CheckpointError(str(exc)) from None
            time.sleep(0.05)
    raise AssertionError("unreachable")  # pragma: no cover


def _swapping(path: Path) -> bool:
    directory = path if path.is_dir() else path.parent
    return (directory / SWAP).exists() or (directory / STAGING).exists()
