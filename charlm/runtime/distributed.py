"""Multi-GPU (or multi-process CPU) training through torch.distributed, as started by torchrun.

    torchrun --standalone --nproc_per_node=4 -m charlm train corpus.txt --device cuda

Each process (rank) trains `batch_size` streams of its own contiguous shard of
the corpus (`charlm.data.shard`); DistributedDataParallel averages the gradients,
so the global batch is world_size x batch_size streams. Rank 0 validates, writes
the checkpoint and reports; decisions that must agree (stop on the time budget or
Ctrl-C, early stopping, plateau annealing, divergence) are taken together at log
intervals or after validation. Without torchrun's environment (WORLD_SIZE unset or 1)
everything here is a no-op and training runs in one process.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn

from charlm.errors import CharlmError


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    # The tensors of this process's latest collective: see `_hold`.
    _held: list[torch.Tensor] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_env(cls) -> DistContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> torch.device:
        """Join the process group; each rank gets its own GPU (cuda:LOCAL_RANK) or the CPU (gloo)."""
        if not self.active:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return device

    def shutdown(self, clean: bool = True) -> None:
        """Leave the process group; after a clean run, only once every rank is done with it.

        The barrier keeps a rank from tearing the group down while another still has
        collectives in flight (rank 0 writing the last checkpoint, say). A failing rank
        skips it: its peers may never reach it.
        """
        if not (self.active and dist.is_initialized()):
            return
        gc.collect()  # a DDP wrapper caught in a reference cycle
        if clean:
            dist.barrier()
        dist.destroy_process_group()

    def _hold(self, *tensors: torch.Tensor) -> None:
        """Keep the tensors of the latest collective referenced from Python until the process ends.

        A gloo worker thread drops its reference to a finished collective's tensors just
        after the caller's wait returns. If that was the last reference to a tensor that
        Python created, the thread must take the GIL to free it; when the process is
        already finalizing by then, the thread is unwound instead and the C++ runtime
        aborts the process ("terminate called without an active exception", SIGABRT,
        torchrun's job FAILED after the checkpoint was written). Destroying the process
        group would join those threads first, but DistributedDataParallel keeps the
        group alive from C++ (torch 2.13), so the worker threads outlive it. Held here,
        the tensors are freed by the interpreter itself, after the workers are idle.
        """
        self._held[:] = tensors

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def _reduce(self, values: list[float], device: torch.device, op: str) -> list[float]:
        """One small float64 collective: "sum" or "max" over ranks, or "main" (rank 0's values)."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        self._hold(t)
        if op == "main":
            dist.broadcast(t, src=0)
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t.tolist()

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        return self._reduce(values, device, "sum")

    def all_max(self, values: list[float], device: torch.device) -> list[float]:
        return self._reduce(values, device, "max")

    def share_from_main(self, produce: Callable[[], bytes], device: torch.device) -> bytes:
        """Rank 0 runs `produce()`; every rank gets its bytes, or raises its one-line error.

        A `CharlmError` on rank 0 (a bad corpus, a full disk) reaches the other ranks
        as the same message, so none is left waiting in a collective. Outside a
        torchrun job this is just `produce()`.
        """
        if not self.active:
            return produce()
        ok, payload = True, b""
        if self.is_main:
            try:
                payload = produce()
            except CharlmError as exc:
                ok, payload, error = False, str(exc).encode("utf-8"), exc
        header = torch.tensor([int(ok), len(payload)], dtype=torch.int64, device=device)
        dist.broadcast(header, src=0)
        body = torch.zeros(int(header[1]), dtype=torch.uint8, device=device)
        self._hold(header, body)
        if body.numel():  # an empty payload needs no second message
            if self.is_main:
                body.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
            dist.broadcast(body, src=0)
        if not bool(header[0]):
            if self.is_main:
                raise error
            raise CharlmError(bytes(body.cpu().tolist()).decode("utf-8"))
        return bytes(body.cpu().tolist())
