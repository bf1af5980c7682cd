"""Checkpoints: one directory holds everything needed to generate, evaluate or resume.

    DIR/
      checkpoint.json     format name and version, charlm version, run id, model
                          options, training options, tokenizer fingerprint (JSON)
      tokenizer.json      the fitted tokenizer (+ tokenizer.model for subwords)
      model.arpa.gz       a Kneser-Ney run's model (ARPA, gzip) instead of best/last
      best.safetensors    weights with the lowest validation loss so far
      last.safetensors    weights + optimiser + RNG + carried TBPTT state of the
                          newest save; the trainer's counters in its metadata
      metrics.jsonl       one JSON record per log line and per validation
      .lock               held (flock) by the process training into DIR

Everything is data: weights and optimiser tensors are safetensors, n-gram models
ARPA text, the rest is JSON. Nothing is unpickled on load, so a file crafted to
run code is refused as corrupt. checkpoint.json names the model kind
(`"model_kind"`: "rnn" or "kn"; absent means "rnn", as older charlm wrote it).

Nothing damaged goes unnoticed: each safetensors file records in its own metadata
(`charlm_sha256`) the SHA-256 of its tensors, computed as it is written, and every
read of its tensors checks it (`verify=False` skips that, for who must load a
damaged file anyway). Files written before this have no digest and load as before.

Nothing lost, whenever a kill lands (see `RunWriter`):
- every file is written to a temporary name and renamed over the old one, so
  each file is always whole (`charlm.fileio`);
- a save writes best, then the validation record, then last, so `last` is the
  commit point of a save: a resume truncates metrics.jsonl to last's step and
  takes the lower of last's recorded best loss and best's own;
- a new run (and `--overwrite`) writes into DIR/.staging until its first save is
  complete, then moves its files into DIR in one committed swap, recorded in
  DIR/.swap.json before the first file moves. Readers resolve each file through
  that record (`locate`), and the next writer completes it, so DIR always holds
  one whole run: the previous one until the swap is committed, the new one after.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from charlm import __version__
from charlm.data import Tokenizer, load_tokenizer
from charlm.errors import CharlmError, CheckpointError, StorageError
from charlm.fileio import (
    DirectoryLock,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    remove_stale_temps,
    storage_error,
)
from charlm.models import KneserNeyConfig, KneserNeyModel, ModelConfig, RNNLanguageModel, token_names

FORMAT = "charlm-checkpoint"
FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.jsonl"
PLOT = "loss.png"
ARPA = "model.arpa.gz"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
RUN_FILES = (META_FILE, *TOKENIZER_FILES, BEST, LAST, ARPA, METRICS, PLOT)  # what a run owns in its directory
STAGING = ".staging"
SWAP = ".swap.json"
MODEL_KINDS = ("rnn", "kn")
DIGEST_KEY = "charlm_sha256"  # safetensors metadata: the SHA-256 of the file's tensors (`tensor_digest`)

LanguageModel = RNNLanguageModel | KneserNeyModel
AnyModelConfig = ModelConfig | KneserNeyConfig


# ------------------------------------------------------------------ file helpers
def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in sorted name order (CPU tensors).

    What was written, not how the file lays it out: safetensors orders its data by
    dtype and name, and a digest of the tensors stays valid for any such layout.
    The bytes are hashed in place (a uint8 view, no copy), so bf16 tensors, which
    numpy cannot hold, are hashed as they are.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(json.dumps([name, str(t.dtype).removeprefix("torch."), list(t.shape)]).encode("utf-8") + b"\0")
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    signed = dict(metadata, **{DIGEST_KEY: tensor_digest(cpu)})
    atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=signed))


def _load_tensors(
    path: Path, verify: bool = True, remedy: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file (tensors + string metadata) and check its recorded digest. Never unpickles.

    A file whose tensors differ from the digest recorded when it was written is a
    one-line CheckpointError that ends with `remedy` (default: load the other of
    best and last, or train again; --no-verify). Files without a digest load as they are.
    """
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing; the checkpoint is incomplete, train again or pick another checkpoint"
        )
    with _readable(path):
        tensors = load_file(str(path))
        metadata = _header(path)
    recorded = metadata.get(DIGEST_KEY)
    if verify and recorded is not None and recorded != tensor_digest(tensors):
        raise CheckpointError(
            f"{path} is damaged (its weights do not match the SHA-256 recorded when it was written); "
            f"{remedy if remedy is not None else _other_file(path)}"
        )
    return tensors, metadata


def _header(path: Path) -> dict[str, str]:
    """A safetensors file's string metadata, read from its header alone (cheap: no tensor is read)."""
    with _readable(path), safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn safetensors' and the OS's errors on reading `path` into the one-line "not a valid file" error."""
    try:
        yield
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({first}); it is corrupt or not a charlm checkpoint, "
            "and charlm never unpickles files"
        ) from None


def _other_file(path: Path) -> str:
    """How to get on without a damaged best or last: the other one (when the run has it), or a new run."""
    other = BEST if path.name == LAST else LAST
    if locate(path.parent, other).is_file():
        fix = f"load the other one with --which {other.split('.')[0]}, or train again"
    else:
        fix = "train again"
    return f"{fix}; --no-verify loads it anyway"


# ------------------------------------------------------------------ state dicts
def model_tensors(model: RNNLanguageModel) -> dict[str, torch.Tensor]:
    """The model's weights, with a tied decoder weight stored once (as the embedding)."""
    sd = model.state_dict()
    if model.config.tie_weights:
        sd.pop("decoder.weight")
    return dict(sd)


def load_model_tensors(model: RNNLanguageModel, tensors: dict[str, torch.Tensor], source: Path) -> None:
    sd = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")} or dict(tensors)
    expected = set(model_tensors(model))
    if set(sd) != expected:
        missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
        raise CheckpointError(
            f"{source} does not match its model options (missing {missing[:3]}, unexpected {extra[:3]}); "
            "the checkpoint is corrupt"
        )
    for k, v in model_tensors(model).items():
        if sd[k].shape != v.shape:
            raise CheckpointError(
                f"{source}: tensor {k} has shape {tuple(sd[k].shape)}, the model options say {tuple(v.shape)}; "
                "the checkpoint is corrupt"
            )
    model.load_state_dict(sd, strict=not model.config.tie_weights)


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (for safetensors) and plain JSON data."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim/{idx}/{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], data: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = val
    for idx, st in data.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    groups = data["param_groups"]
    for g in groups:
        for k, v in list(g.items()):
            if isinstance(v, list) and k != "params":
                g[k] = tuple(v)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ------------------------------------------------------------------ reading a directory
def locate(directory: str | Path, name: str) -> Path:
    """Where a run file of `directory` is now: DIR/name, or DIR/.staging/name while a committed swap moves it.

    During a swap every file of the new run is read from wherever it is at that
    moment, and a file of the old run that the new one lacks counts as gone, so a
    reader never mixes the two runs.
    """
    directory = Path(directory)
    plan = _swap_plan(directory)
    if plan is not None and name in RUN_FILES:
        staged = directory / STAGING / name
        if name in plan["move"] and staged.exists():
            return staged
        if name in plan["remove"]:
            return staged  # does not exist: the old run's file is no longer part of the directory
    return directory / name


def _swap_plan(directory: Path) -> dict[str, list[str]] | None:
    try:
        plan = json.loads((directory / SWAP).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise CheckpointError(f"{directory / SWAP} is unreadable; the checkpoint is corrupt") from None
    if not isinstance(plan, dict) or not all(isinstance(plan.get(k), list) for k in ("move", "remove")):
        raise CheckpointError(f"{directory / SWAP} is not a charlm swap record; the checkpoint is corrupt")
    return plan


@dataclass
class CheckpointInfo:
    """What a checkpoint directory says about itself (no weights)."""

    path: Path
    model_config: AnyModelConfig
    train_config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_kind(self) -> str:
        """ "rnn" or "kn" (checkpoint.json's model_kind; absent in checkpoints of older charlm: "rnn")."""
        return str(self.meta.get("model_kind", "rnn"))

    @property
    def run_id(self) -> str | None:
        return self.meta.get("run_id")


def is_checkpoint_dir(path: str | Path) -> bool:
    return locate(Path(path), META_FILE).is_file()


def holds_run(path: str | Path) -> bool:
    """True when `path` holds (part of) a run that a new run would replace."""
    return any(locate(Path(path), name).exists() for name in (META_FILE, BEST, LAST))


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """Identity of a tokenizer's data, recorded in checkpoint.json to catch files of two runs mixed."""
    return hashlib.sha256(json.dumps(tokenizer.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()


def write_run_files(
    directory: Path,
    model_config: AnyModelConfig,
    tokenizer: Tokenizer,
    train_config: dict[str, Any],
    run_id: str | None = None,
) -> str:
    """Write the description of a run (tokenizer first, then checkpoint.json); return its run id."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(directory)
    run_id = run_id or uuid.uuid4().hex
    atomic_write_json(
        directory / META_FILE,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "charlm_version": __version__,
            "run_id": run_id,
            "model_kind": "kn" if isinstance(model_config, KneserNeyConfig) else "rnn",
            "model": model_config.to_dict(),
            "train": train_config,
            "tokenizer": {
                "kind": tokenizer.kind,
                "vocab_size": tokenizer.vocab_size,
                "sha256": tokenizer_fingerprint(tokenizer),
            },
        },
    )
    return run_id


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
        model_config: AnyModelConfig = (
            ModelConfig.from_dict(meta["model"]) if kind == "rnn" else _ngram_config(meta["model"])
        )
    except (KeyError, TypeError, CharlmError) as exc:
        raise CheckpointError(f"{p / META_FILE} has invalid model options ({exc}); the checkpoint is corrupt") from None
    return CheckpointInfo(p, model_config, meta.get("train", {}), meta)


def _ngram_config(d: Any) -> KneserNeyConfig:
    if not isinstance(d, dict) or set(d) != {"vocab_size", "order"}:
        raise TypeError("expected vocab_size and order")
    config = KneserNeyConfig(**d)
    if not all(isinstance(v, int) and v >= 1 for v in (config.vocab_size, config.order)):
        raise TypeError("vocab_size and order must be positive integers")
    return config


def open_tokenizer(info: CheckpointInfo) -> Tokenizer:
    """The run's tokenizer, checked against the fingerprint its checkpoint.json recorded."""
    try:
        tokenizer = load_tokenizer(info.path, locate=lambda name: locate(info.path, name))
    except CharlmError as exc:
        raise CheckpointError(f"{info.path}: {exc}") from None
    recorded = info.meta.get("tokenizer", {}).get("sha256")
    if recorded is not None and recorded != tokenizer_fingerprint(tokenizer):
        raise _MixedRuns(
            f"{info.path}: tokenizer.json belongs to another run than {META_FILE}; the checkpoint is corrupt"
        )
    if tokenizer.vocab_size != info.model_config.vocab_size:
        raise CheckpointError(
            f"{info.path}: tokenizer has {tokenizer.vocab_size} ids but the model {info.model_config.vocab_size}; "
            "the checkpoint is corrupt"
        )
    return tokenizer


class _MixedRuns(CheckpointError):
    """Files of two runs met: a reader crossed a swap (read again) or the directory was edited by hand."""


def save_weights(directory: Path, which: str, model: RNNLanguageModel, metadata: dict[str, Any]) -> None:
    """Write best.safetensors or a weights-only last.safetensors."""
    name = BEST if which == "best" else LAST
    _atomic_save_tensors(
        Path(directory) / name,
        {f"model/{k}": v for k, v in model_tensors(model).items()},
        {"charlm": json.dumps(metadata)},
    )


def save_training_state(
    directory: Path,
    model: RNNLanguageModel,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor],
) -> None:
    """Write last.safetensors: weights, optimiser, RNG and carried state, in one atomic file."""
    tensors = {f"model/{k}": v for k, v in model_tensors(model).items()}
    opt_tensors, opt_data = optimizer_to_flat(optimizer)
    tensors.update(opt_tensors)
    tensors.update(extra_tensors)
    metadata = {"charlm": json.dumps({"trainer": trainer_state, "optimizer": opt_data})}
    _atomic_save_tensors(Path(directory) / LAST, tensors, metadata)


def load_training_state(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read last.safetensors: (tensors, {"trainer": ..., "optimizer": ...})."""
    path = locate(Path(directory), LAST)
    remedy = "a resume needs it whole: start a new run with --overwrite (best still loads with --which best)"
    tensors, metadata = _load_tensors(path, remedy=remedy if locate(Path(directory), BEST).is_file() else None)
    try:
        data = json.loads(metadata["charlm"])
        data["trainer"], data["optimizer"]  # noqa: B018 - both must be present
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CheckpointError(
            f"{path} holds weights only, not a resumable training state; start a new run with --overwrite"
        ) from None
    return tensors, data


def weights_metadata(directory: Path, which: str) -> dict[str, Any] | None:
    """The metadata best/last.safetensors was saved with (step, validation loss, ...), or None if absent.

    Read from the header alone: no tensor is read (or verified) to learn a step count.
    """
    path = locate(Path(directory), BEST if which == "best" else LAST)
    if not path.is_file():
        return None
    metadata = _header(path)
    try:
        meta = json.loads(metadata.get("charlm", "{}"))
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def build_model(
    info: CheckpointInfo, which: str = "best", device: str | torch.device = "cpu", verify: bool = True
) -> tuple[RNNLanguageModel, dict[str, Any]]:
    """The model with weights from best (falling back to last when no validation ran yet) or last.

    verify=False loads weights that do not match their recorded digest (a damaged file).
    """
    if which not in ("best", "last"):
        raise CheckpointError(f"unknown checkpoint {which!r}; choose best or last")
    if not isinstance(info.model_config, ModelConfig):
        raise CheckpointError(f"{info.path} holds a Kneser-Ney model, not weights; load it with load_for_inference")
    path = locate(info.path, BEST if which == "best" else LAST)
    if which == "best" and not path.is_file():
        path = locate(info.path, LAST)
    tensors, metadata = _load_tensors(path, verify)
    model = RNNLanguageModel(info.model_config)
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
        raise _MixedRuns(f"{path} belongs to another run than {info.path / META_FILE}; the checkpoint is corrupt")
    return model.to(device).eval(), meta


def build_ngram_model(info: CheckpointInfo, tokenizer: Tokenizer, device: str | torch.device = "cpu") -> KneserNeyModel:
    """A Kneser-Ney run's model, read from its ARPA file (text: nothing is unpickled)."""
    path = locate(info.path, ARPA)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, train again or pick another")
    model = KneserNeyModel.from_arpa(path, token_names(tokenizer))
    if model.config != info.model_config:
        raise _MixedRuns(f"{path} belongs to another run than {info.path / META_FILE}; the checkpoint is corrupt")
    return model.to(device).eval()


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
            tokenizer = open_tokenizer(info)
            if info.model_kind == "kn":
                return build_ngram_model(info, tokenizer, device), tokenizer, info
            model, _ = build_model(info, which, device, verify)
            return model, tokenizer, info
        except (_MixedRuns, CheckpointError) as exc:
            if attempt == 2 or not (isinstance(exc, _MixedRuns) or _swapping(Path(path))):
                raise CheckpointError(str(exc)) from None
            time.sleep(0.05)
    raise AssertionError("unreachable")  # pragma: no cover


def _swapping(path: Path) -> bool:
    directory = path if path.is_dir() else path.parent
    return (directory / SWAP).exists() or (directory / STAGING).exists()


def write_inference_checkpoint(
    directory: str | Path, model: RNNLanguageModel, tokenizer: Tokenizer, train_config: dict[str, Any] | None = None
) -> Path:
    """A loadable checkpoint from an in-memory model (no training state): for tests and export."""
    directory = Path(directory)
    run_id = write_run_files(directory, model.config, tokenizer, train_config or {})
    save_weights(directory, "best", model, {"step": 0, "run_id": run_id})
    return directory


# ------------------------------------------------------------------ writing a run
class RunWriter:
    """The one process that writes a run's directory; every save leaves one whole, loadable run.

        with RunWriter(out) as w:                  # lock DIR, finish or drop what a killed writer left
            w.begin(model_config, tokenizer, cfg)  # a new run: described in DIR/.staging (DIR unchanged)
            w.log(records)                         # metrics.jsonl of the run being written
            w.save(model, optimizer, state, extra, best=..., records=[valid record])
                                                   # first save of a new run: swapped into DIR

    A new run that fails before its first save leaves DIR exactly as it was (the
    previous run, if any, untouched). See the module doc for the save order.
    """

    def __init__(self, directory: str | Path) -> None:
        self.final = Path(directory)
        self.staging = self.final / STAGING
        self._created = not self.final.exists()
        try:
            self.final.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.final}: {exc.strerror}; choose a writable --out") from None
        self._lock = DirectoryLock(self.final).acquire("training")
        try:
            recover(self.final)
        except BaseException:
            self._lock.release()
            raise
        self.committed = True  # False while a new run lives in .staging
        self.run_id: str | None = None

    @property
    def path(self) -> Path:
        """Where the run's files are written now."""
        return self.final if self.committed else self.staging

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is not None and not self.committed:
                self.abort()
        finally:
            self._lock.release()

    def begin(self, model_config: AnyModelConfig, tokenizer: Tokenizer, train_config: dict[str, Any]) -> None:
        """Describe a new run in the staging directory; DIR changes only at its first save."""
        self.committed = False
        self.staging.mkdir(exist_ok=True)
        self.run_id = write_run_files(self.staging, model_config, tokenizer, train_config)

    def continue_run(self, info: CheckpointInfo, train_config: dict[str, Any]) -> None:
        """A resumed run: record its options as they now are (limits may have changed)."""
        self.run_id = info.run_id
        meta = dict(info.meta, train=train_config, charlm_version=__version__)
        atomic_write_json(self.final / META_FILE, meta)

    def log(self, records: list[dict[str, Any]]) -> None:
        append_metrics(self.path, records)

    def save(
        self,
        model: RNNLanguageModel,
        optimizer: torch.optim.Optimizer,
        trainer_state: dict[str, Any],
        extra_tensors: dict[str, torch.Tensor],
        *,
        best: dict[str, Any] | None = None,
        records: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ) -> None:
        """One save: best (its metadata given when the model improved), the records, then last (the commit)."""
        if best is not None:
            save_weights(self.path, "best", model, dict(best, run_id=self.run_id))
        if records:
            self.log(list(records))
        save_training_state(self.path, model, optimizer, dict(trainer_state, run_id=self.run_id), extra_tensors)
        if not self.committed:
            self._swap_in()

    def save_ngram(self, model: KneserNeyModel, tokenizer: Tokenizer, records: list[dict[str, Any]]) -> None:
        """A Kneser-Ney run's one save: the ARPA file, then its records, then (a new run) the swap into DIR,
        which is the commit point: until it, DIR holds the previous run."""
        model.to_arpa(self.path / ARPA, token_names(tokenizer))
        if records:
            self.log(records)
        if not self.committed:
            self._swap_in()

    def _swap_in(self) -> None:
        """Move the staged run into DIR: commit the plan (.swap.json), then carry it out."""
        moving = sorted(n for n in RUN_FILES if (self.staging / n).exists())
        removing = sorted(n for n in RUN_FILES if n not in moving and (self.final / n).exists())
        atomic_write_json(self.final / SWAP, {"move": moving, "remove": removing})  # the commit point
        self.committed = True
        _apply_swap(self.final)

    def abort(self) -> None:
        """A new run failed before its first save: drop it; DIR is as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.committed = True
        if self._created and all(p.name == ".lock" for p in self.final.iterdir()):
            self._lock.release()
            shutil.rmtree(self.final, ignore_errors=True)


def recover(directory: Path) -> list[str]:
    """Bring a directory a killed writer left behind back to one whole run; return what was done.

    A committed swap is carried out; an uncommitted staging directory (a new run
    that never completed a save) and stale temporary files are removed. Only the
    holder of the directory's lock may call this.
    """
    done = []
    if (directory / SWAP).exists():
        _apply_swap(directory)
        done.append("completed the swap-in of a new run")
    elif (directory / STAGING).exists():
        shutil.rmtree(directory / STAGING)
        done.append("removed a new run that never saved")
    removed = remove_stale_temps(directory)
    if removed:
        done.append(f"removed {len(removed)} unfinished temporary file(s)")
    return done


def _apply_swap(directory: Path) -> None:
    """Carry out .swap.json; idempotent, so a writer killed half-way can simply run it again."""
    plan = _swap_plan(directory)
    if plan is None:
        return
    try:
        for name in plan["move"]:
            if (directory / STAGING / name).exists():
                os.replace(directory / STAGING / name, directory / name)
        for name in plan["remove"]:
            (directory / name).unlink(missing_ok=True)
        fsync_dir(directory)
        shutil.rmtree(directory / STAGING, ignore_errors=True)
        (directory / SWAP).unlink(missing_ok=True)
        fsync_dir(directory)
    except OSError as exc:
        raise StorageError(
            f"cannot finish writing {directory}: {exc.strerror}; fix the disk and run `charlm train --resume` again"
        ) from None


# ------------------------------------------------------------------ metrics
def append_metrics(directory: Path, records: list[dict[str, Any]]) -> None:
    """Append records to metrics.jsonl, durably (a record is whole or, cut by a kill, skipped on read)."""
    path = Path(directory) / METRICS
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise storage_error(exc, path, "append to") from None


def read_metrics(directory: Path) -> list[dict[str, Any]]:
    path = locate(Path(directory), METRICS)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill; the records before it stand
    return out


def truncate_metrics(directory: Path, step: int) -> None:
    """Keep only records up to `step` (a resumed run re-logs what came after its save)."""
    kept = [r for r in read_metrics(directory) if r.get("step", 0) <= step]
    atomic_write_bytes(Path(directory) / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())
