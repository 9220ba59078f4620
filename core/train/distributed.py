"""One run on several processes (torch.distributed, DistributedDataParallel), started by torchrun.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in every process it starts; `setup()` reads them and
joins the process group (gloo; on a machine with CUDA "cpu:gloo,cuda:nccl": CUDA tensors go through
NCCL, objects and CPU tensors through gloo). Without WORLD_SIZE, or with WORLD_SIZE=1, it is one
process with no group at all and every helper below is the identity: today's behaviour exactly.

Rank 0 is the main process: it alone writes the run (events, split, checkpoints, predictions);
the engine asks it (`broadcast`) for what the others need, gathers the evaluations to it
(`gather_rows`), sums the epoch's counts over every process (`sum`) and agrees on stopping
(`agree_stop`). torchvision's references/classification/train.py and nanoGPT's train.py are the
models.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time

import numpy as np
import torch
import torch.distributed as dist

from core.errors import UserError

STOP_EVERY = 10           # steps between the processes' agreement on stopping (one broadcast of an int)


class Distributed:
    """This process's place in the run: rank, local_rank, world_size, is_main, device."""

    def __init__(self, rank: int = 0, local_rank: int = 0, world_size: int = 1, backend: str | None = None):
        self.rank, self.local_rank, self.world_size, self.backend = rank, local_rank, world_size, backend
        self.enabled = world_size > 1
        self.is_main = rank == 0
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")    # where a CUDA run trains

    def place(self, device: torch.device) -> torch.device:
        """The device this process trains on, given the one the run's --device resolves to: on
        CUDA each process takes the GPU of its local rank."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            n = torch.cuda.device_count()
            if self.local_rank >= n:
                raise UserError(f"Process {self.rank} needs GPU cuda:{self.local_rank}, but this machine shows "
                                f"{n} GPU(s); start at most {n} processes per machine (--nproc / --nproc_per_node).")
            torch.cuda.set_device(self.local_rank)
            return torch.device(f"cuda:{self.local_rank}")
        if device.type != "cpu":
            raise UserError(f"Training on several processes needs CUDA or the CPU, not {device.type}; "
                            "use --device cpu or --nproc 1.")
        return device

    # -------------------------------------------------------------- collectives (identity on one process)
    def broadcast(self, obj=None):
        """Rank 0's `obj` on every process (picklable; tensors travel on the CPU)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list | None:
        """Every process's `obj`, in rank order, on rank 0; None elsewhere."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def gather_rows(self, array: np.ndarray) -> np.ndarray | None:
        """The rows each process evaluated (its `shard(..., pad=False)` of a split), put back in the
        split's order on rank 0: exactly what one process would have computed. None elsewhere."""
        parts = self.gather(array)
        return None if parts is None else unshard(parts)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over every process (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t)                       # a CPU tensor: gloo, whatever the training device
        return t.tolist()

    def agree_stop(self, flag: bool) -> bool:
        """Rank 0's decision (its sink's should_stop) on every process, so that all stop at the same
        step: the others waiting in DDP's next all-reduce for a process that left would hang."""
        return bool(self.broadcast(int(bool(flag))))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sync_buffers(self, model) -> None:
        """Rank 0's buffers (batch-norm running statistics) on every process before evaluating:
        under DDP each process updates them with its own batches after the last broadcast."""
        if self.enabled:
            for b in model.buffers():
                dist.broadcast(b.data, src=0)

    def describe(self, device: torch.device) -> str:
        """'distributed: N processes (backend, devices)' for the run's events (every process must call it)."""
        where = self.gather((socket.gethostname(), str(device)))
        if where is None:
            return ""
        hosts = {h for h, _ in where}
        devices = ", ".join(f"{h} {d}" if len(hosts) > 1 else d for h, d in where)
        return f"distributed: {self.world_size} processes ({self.backend}; {devices})"

    def close(self) -> None:
        global _current
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
        _current = None


_current: Distributed | None = None


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup() -> Distributed:
    """This process's context from torchrun's variables; joins the process group once."""
    global _current
    if _current is not None:
        return _current
    if not launched():
        _current = Distributed()
        return _current
    if not dist.is_available():
        raise UserError("This PyTorch has no torch.distributed; train with one process (--nproc 1).")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    watch_parent()
    _current = Distributed(rank, local, world, backend)
    return _current


def watch_parent() -> None:
    """Leave when the parent process is gone. A process torchrun started: torchrun killed with
    SIGKILL cannot stop it (it runs in a session of its own) and it would go on training into the
    run. torchrun started by a job: the job's process killed, torchrun stops its processes."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.25)
        os.kill(os.getpid(), signal.SIGTERM)    # the CLI and the entry point record it as interrupted
        time.sleep(10.0)
        os._exit(1)                             # stuck in a collective: do not linger
    threading.Thread(target=watch, name="ddp-parent-watch", daemon=True).start()


# ------------------------------------------------------------------ sharding (pure functions)

def shard(order: np.ndarray, rank: int, world: int, pad: bool) -> np.ndarray:
    """This process's share of an epoch's `order`: every world-th index from `rank`. `pad`
    (training): the order first repeats from its start up to a multiple of `world`, so that every
    process gets ceil(n / world) indices and takes the same number of steps (DistributedSampler's
    padding). Without padding (evaluation) each index is used exactly once; `unshard` undoes it."""
    order = np.asarray(order)
    if world == 1:
        return order
    if pad and len(order):
        order = np.resize(order, math.ceil(len(order) / world) * world)    # repeats cyclically
    return order[rank::world]


def shard_size(n: int, rank: int, world: int, pad: bool) -> int:
    if world == 1:
        return n
    return math.ceil(n / world) if pad else len(range(rank, n, world))


def unshard(parts: list[np.ndarray]) -> np.ndarray:
    """The inverse of shard(pad=False): rank r's rows go back to positions r, r + world, ..."""
    parts = [np.asarray(p) for p in parts]
    full = [p for p in parts if len(p)]
    if len(parts) == 1 or not full:
        return parts[0]
    out = np.empty((sum(len(p) for p in parts), *full[0].shape[1:]), dtype=full[0].dtype)
    for r, p in enumerate(parts):
        if len(p):
            out[r::len(parts)] = p
    return out
