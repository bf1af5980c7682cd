"""What one server holds: its models and their decode loops, the caps, the key check."""

from __future__ import annotations

from typing import Any

from charlm.api import LanguageModel
from charlm.serve.auth import KeyCheck
from charlm.serve.caps import Caps
from charlm.serve.errors import APIError, bad_request
from charlm.serve.models import ServedModel
from charlm.serve.scheduler import BatchFactory, ModelWorker, decode_batch


class ServerState:
    """The served models by name, each with its decode loop; started and stopped with the app."""

    def __init__(
        self,
        models: dict[str, LanguageModel],
        caps: Caps,
        api_key: str | None = None,
        make_batch: BatchFactory = decode_batch,
    ) -> None:
        self.caps = caps
        self.auth = KeyCheck(api_key)
        self.models = {
            name: ServedModel(name, lm, ModelWorker(name, lm, caps, make_batch)) for name, lm in models.items()
        }
        self._started = False

    def pick(self, name: Any) -> ServedModel:
        """The model a request names (404 for an unknown name); the only one when it names none."""
        names = ", ".join(self.models)
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise bad_request(f"model is required: this server has {names}", param="model")
        if not isinstance(name, str):
            raise bad_request("model must be a string: the name of a model of GET /v1/models", param="model")
        if name not in self.models:
            raise APIError(
                404,
                f"the model {name[:100]!r} does not exist; this server has {names}",
                param="model",
                code="model_not_found",
            )
        return self.models[name]

    def start(self) -> None:
        if not self._started:
            self._started = True
            for m in self.models.values():
                m.worker.start()

    def stop(self, grace: float) -> None:
        """Admit nothing more; let rows decode for `grace` seconds, then cancel them (their streams told why)."""
        for m in self.models.values():
            m.worker.stop(grace)

    def join(self, timeout: float | None = None) -> None:
        if self._started:
            for m in self.models.values():
                m.worker.join(timeout)
