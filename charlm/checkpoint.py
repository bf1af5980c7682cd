"""Checkpoints: one directory holds everything needed to generate, evaluate or resume.

    DIR/
      checkpoint.json     format name and version, charlm version, model options,
                          training options (JSON)
      tokenizer.json      the fitted tokenizer (+ tokenizer.model for subwords)
      best.safetensors    weights with the lowest validation loss so far
      last.safetensors    weights + optimiser + RNG + carried TBPTT state of the
                          newest save; the trainer's counters in its metadata
      metrics.jsonl       one JSON record per log line and per validation

Everything is data: weights and optimiser tensors are safetensors, the rest is
JSON. Nothing is unpickled on load, so a file crafted to run code is refused as
corrupt. Every file is written to a temporary name in DIR and renamed over the
old one (`os.replace`), so a kill at any moment leaves the previous version
loadable.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from charlm import __version__
from charlm.errors import CharlmError, CheckpointError
from charlm.model import ModelConfig, RNNLanguageModel
from charlm.tokenizers import Tokenizer, load_tokenizer

FORMAT = "charlm-checkpoint"
FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.jsonl"


# ------------------------------------------------------------------ file helpers
def _temp_path(path: Path) -> str:
    """A temporary file beside `path`, with the permissions a plain open() would give."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tmp = _temp_path(path)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file (tensors + string metadata). Never unpickles."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, train again or pick another checkpoint")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({first}); it is corrupt or not a charlm checkpoint, "
            "and charlm never unpickles files"
        ) from None
    return tensors, metadata


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


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
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


# ------------------------------------------------------------------ the directory
@dataclass
class CheckpointInfo:
    """What a checkpoint directory says about itself (no weights)."""

    path: Path
    model_config: ModelConfig
    train_config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def has(self, which: str) -> bool:
        return (self.path / (BEST if which == "best" else LAST)).is_file()


def is_checkpoint_dir(path: Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def write_run_files(directory: Path, model_config: ModelConfig, tokenizer: Tokenizer, train_config: dict[str, Any]) -> None:
    """Write the description of a run: format, options and tokenizer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(directory)
    atomic_write_json(
        directory / META_FILE,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "charlm_version": __version__,
            "model": model_config.to_dict(),
            "train": train_config,
            "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
        },
    )


def open_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read and check checkpoint.json. `path` is the directory or a file inside it."""
    p = Path(path)
    if p.is_file() and p.suffix == ".safetensors":
        p = p.parent
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; pass the directory `charlm train` wrote (e.g. checkpoints/tinyshakespeare)")
    if not p.is_dir() or not (p / META_FILE).is_file():
        raise CheckpointError(f"{p} is not a charlm checkpoint (no {META_FILE}); pass the directory `charlm train` wrote")
    try:
        meta = json.loads((p / META_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p / META_FILE} is corrupt ({exc.__class__.__name__}); train again or restore it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{p / META_FILE} is not a charlm checkpoint description")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format version {version}, this charlm {__version__} reads version {FORMAT_VERSION}; "
            "use the charlm version that wrote it"
        )
    try:
        model_config = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, CharlmError) as exc:
        raise CheckpointError(f"{p / META_FILE} has invalid model options ({exc}); the checkpoint is corrupt") from None
    return CheckpointInfo(p, model_config, meta.get("train", {}), meta)


def save_weights(directory: Path, which: str, model: RNNLanguageModel, metadata: dict[str, Any]) -> None:
    """Write best.safetensors or a weights-only last.safetensors."""
    name = BEST if which == "best" else LAST
    _atomic_save_tensors(Path(directory) / name, {f"model/{k}": v for k, v in model_tensors(model).items()}, {"charlm": json.dumps(metadata)})


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
    path = Path(directory) / LAST
    tensors, metadata = _load_tensors(path)
    try:
        data = json.loads(metadata["charlm"])
        data["trainer"], data["optimizer"]  # noqa: B018 - both must be present
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} holds weights only, not a resumable training state; start a new run with --overwrite") from None
    return tensors, data


def build_model(info: CheckpointInfo, which: str = "best", device: str | torch.device = "cpu") -> tuple[RNNLanguageModel, dict[str, Any]]:
    """The model with weights from best (falling back to last when no validation ran yet) or last."""
    if which not in ("best", "last"):
        raise CheckpointError(f"unknown checkpoint {which!r}; choose best or last")
    name = BEST if which == "best" else LAST
    if which == "best" and not (info.path / BEST).is_file() and (info.path / LAST).is_file():
        name = LAST
    tensors, metadata = _load_tensors(info.path / name)
    model = RNNLanguageModel(info.model_config)
    load_model_tensors(model, tensors, info.path / name)
    try:
        meta = json.loads(metadata.get("charlm", "{}"))
    except json.JSONDecodeError:
        meta = {}
    return model.to(device).eval(), meta


def load_for_inference(path: str | Path, which: str = "best", device: str | torch.device = "cpu") -> tuple[RNNLanguageModel, Tokenizer, CheckpointInfo]:
    """Everything needed to generate or evaluate: (model in eval mode, tokenizer, info)."""
    info = open_checkpoint(path)
    try:
        tokenizer = load_tokenizer(info.path)
    except CharlmError as exc:
        raise CheckpointError(f"{info.path}: {exc}") from None
    model, _ = build_model(info, which, device)
    if tokenizer.vocab_size != info.model_config.vocab_size:
        raise CheckpointError(
            f"{info.path}: tokenizer has {tokenizer.vocab_size} ids but the model {info.model_config.vocab_size}; the checkpoint is corrupt"
        )
    return model, tokenizer, info


def write_inference_checkpoint(directory: str | Path, model: RNNLanguageModel, tokenizer: Tokenizer, train_config: dict[str, Any] | None = None) -> Path:
    """A loadable checkpoint from an in-memory model (no training state): for tests and export."""
    directory = Path(directory)
    write_run_files(directory, model.config, tokenizer, train_config or {})
    save_weights(directory, "best", model, {"step": 0})
    return directory


# ------------------------------------------------------------------ metrics
def append_metrics(directory: Path, records: list[dict[str, Any]]) -> None:
    with open(Path(directory) / METRICS, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
        f.flush()


def read_metrics(directory: Path) -> list[dict[str, Any]]:
    path = Path(directory) / METRICS
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
