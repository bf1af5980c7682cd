"""The served models: each checkpoint under a name (never a path on disk), its decode loop and its card."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlm.api import LanguageModel, load
from charlm.checkpoint import METRICS
from charlm.errors import ConfigError
from charlm.serve.scheduler import ModelWorker

Source = str | os.PathLike[str] | LanguageModel
Models = Sequence[Source] | Mapping[str, Source]


def load_models(
    models: Models, device: str = "auto", which: str = "best", verify: bool = True
) -> dict[str, LanguageModel]:
    """Name each model: a mapping's keys, `NAME=PATH`, or the checkpoint directory's name. Loads paths once."""
    named: list[tuple[str, Source]] = []
    if isinstance(models, Mapping):
        named = list(models.items())
    else:
        for m in models:
            if isinstance(m, LanguageModel):
                named.append((m.path.name, m))
                continue
            text = os.fspath(m)
            name, sep, path = text.partition("=")
            if sep and name and not Path(text).exists():
                named.append((name, path))
            else:
                named.append((Path(text).resolve().name, text))
    if not named:
        raise ConfigError("no model to serve; pass at least one checkpoint directory")
    out: dict[str, LanguageModel] = {}
    for name, source in named:
        if not name or any(c.isspace() or c == "/" for c in name):
            raise ConfigError(f"model name {name!r} is not usable in a request; name it NAME=PATH with a plain name")
        if name in out:
            raise ConfigError(f"two models are named {name!r}; name them apart as NAME=PATH (e.g. {name}-2=...)")
        lm = source if isinstance(source, LanguageModel) else load(source, which=which, device=device, verify=verify)
        out[name] = lm
    return out


@dataclass
class ServedModel:
    """One model behind the API: its name, the loaded checkpoint, its decode loop."""

    name: str
    lm: LanguageModel
    worker: ModelWorker
    created: int = field(default_factory=lambda: int(time.time()))

    def card(self) -> dict[str, Any]:
        """The `/v1/models` entry, with charlm's own figures (what the page shows) under `charlm`."""
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "charlm",
            "charlm": self.figures(),
        }

    def figures(self) -> dict[str, Any]:
        cfg = self.lm.info.model_config
        params = sum(p.numel() for p in self.lm.model.parameters()) if hasattr(self.lm.model, "parameters") else None
        out: dict[str, Any] = {
            "kind": self.lm.kind,
            "level": self.lm.level,
            "vocab_size": self.lm.tokenizer.vocab_size,
            "cell": getattr(cfg, "cell", None),
            "layers": getattr(cfg, "num_layers", None),
            "hidden": getattr(cfg, "hidden_size", None),
            "parameters": params,
        }
        return out | training_figures(self.lm.path)


def training_figures(path: Path) -> dict[str, Any]:
    """The last validation of the run (step, loss, bits per character, seconds), from its metrics.jsonl."""
    try:
        lines = (path / METRICS).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("type") == "valid":
            keys = ("step", "best_valid_loss", "valid_loss", "valid_bpc", "valid_ppl", "elapsed")
            return {("train_seconds" if k == "elapsed" else k): rec.get(k) for k in keys if k in rec}
    return {}
