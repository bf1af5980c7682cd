"""Tensors in checkpoint files: their digest, reading them back checked, and the model's and optimiser's states
as flat name -> tensor maps (safetensors holds tensors and string metadata, nothing else).

Nothing damaged goes unnoticed: each safetensors file records in its own metadata
(`charlm_sha256`) the SHA-256 of its tensors, computed as it is written
(`charlm.checkpoint.store`), and every read of its tensors checks it (`verify=False`
skips that, for who must load a damaged file anyway). Files written before this have
no digest and load as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from charlm.checkpoint.layout import BEST, LAST, locate
from charlm.errors import CheckpointError
from charlm.models import RNNLanguageModel

DIGEST_KEY = "charlm_sha256"  # safetensors metadata: the SHA-256 of the file's tensors (`tensor_digest`)


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


def load_tensors(
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
        metadata = read_header(path)
    recorded = metadata.get(DIGEST_KEY)
    if verify and recorded is not None and recorded != tensor_digest(tensors):
        raise CheckpointError(
            f"{path} is damaged (its weights do not match the SHA-256 recorded when it was written); "
            f"{remedy if remedy is not None else _other_file(path)}"
        )
    return tensors, metadata


def read_header(path: Path) -> dict[str, str]:
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
