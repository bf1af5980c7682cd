"""Writing a checkpoint directory (its layout: `charlm.checkpoint.layout`), so that nothing is lost
whenever a kill lands (see `RunWriter`):

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

Each safetensors file is signed as it is written: its metadata records the SHA-256 of
its tensors (`charlm.checkpoint.tensors` checks it on every read). What a save records in
last's and best's metadata is read back here too (`load_training_state`, `weights_metadata`),
so the format of a resumable state lives in one module.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from charlm import __version__
from charlm.checkpoint.layout import (
    ARPA,
    BEST,
    FORMAT,
    FORMAT_VERSION,
    LAST,
    META_FILE,
    METRICS,
    RUN_FILES,
    STAGING,
    SWAP,
    locate,
    swap_plan,
)
from charlm.checkpoint.loading import CheckpointInfo, tokenizer_fingerprint
from charlm.checkpoint.tensors import (
    DIGEST_KEY,
    load_tensors,
    model_tensors,
    optimizer_to_flat,
    read_header,
    tensor_digest,
)
from charlm.data import Tokenizer
from charlm.errors import CheckpointError, StorageError
from charlm.fileio import (
    DirectoryLock,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    remove_stale_temps,
    storage_error,
)
from charlm.models import KneserNeyModel, LMConfig, RNNLanguageModel, token_names

# isort: split
# The read side, named here too for who takes the room as `from charlm.checkpoint import store` (the trainer, tests
# written before the room was split); new code takes these names from the door, `charlm.checkpoint`.
from charlm.checkpoint.layout import holds_run, is_checkpoint_dir  # noqa: F401
from charlm.checkpoint.loading import load_for_inference, open_checkpoint, open_tokenizer  # noqa: F401
from charlm.checkpoint.tensors import load_model_tensors, optimizer_from_flat  # noqa: F401


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write tensors to `path` atomically, signed: their digest goes into the metadata (`tensor_digest`)."""
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    signed = dict(metadata, **{DIGEST_KEY: tensor_digest(cpu)})
    atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=signed))


def write_run_files(
    directory: Path,
    model_config: LMConfig,
    tokenizer: Tokenizer,
    train_config: dict[str, Any],
    run_id: str | None = None,
) -> str:
    """Write the description of a run (tokenizer first, then checkpoint.json); return its run id."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(directory)
    run_id = run_id or uuid.uuid4().hex
    task = getattr(model_config, "task", None)  # a model trained for a task (a tagger); absent for an LM
    atomic_write_json(
        directory / META_FILE,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "charlm_version": __version__,
            "run_id": run_id,
            "model_kind": model_config.kind,
            **({"task": task} if task else {}),
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


def save_weights(directory: Path, which: str, model: RNNLanguageModel, metadata: dict[str, Any]) -> None:
    """Write best.safetensors or a weights-only last.safetensors."""
    name = BEST if which == "best" else LAST
    save_tensors(
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
    save_tensors(Path(directory) / LAST, tensors, metadata)


def load_training_state(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read last.safetensors: (tensors, {"trainer": ..., "optimizer": ...})."""
    path = locate(Path(directory), LAST)
    remedy = "a resume needs it whole: start a new run with --overwrite (best still loads with --which best)"
    tensors, metadata = load_tensors(path, remedy=remedy if locate(Path(directory), BEST).is_file() else None)
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
    metadata = read_header(path)
    try:
        meta = json.loads(metadata.get("charlm", "{}"))
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def write_inference_checkpoint(
    directory: str | Path, model: RNNLanguageModel, tokenizer: Tokenizer, train_config: dict[str, Any] | None = None
) -> Path:
    """A loadable checkpoint from an in-memory model (no training state): for tests and export."""
    directory = Path(directory)
    run_id = write_run_files(directory, model.config, tokenizer, train_config or {})
    save_weights(directory, "best", model, {"step": 0, "run_id": run_id})
    return directory


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

    def begin(self, model_config: LMConfig, tokenizer: Tokenizer, train_config: dict[str, Any]) -> None:
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
    plan = swap_plan(directory)
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
