"""Where a job runs: one process, or one rank of many under torchrun.

``torchrun --nproc_per_node N -m verify converge ...`` (or ``python -m torch.distributed.run``)
sets RANK/WORLD_SIZE/LOCAL_RANK; :func:`setup` then joins the process group: gloo on CPU, NCCL
on CUDA (one GPU per local rank). The model is wrapped in DistributedDataParallel; on CUDA,
torch.nn.BatchNorm2d layers become SyncBatchNorm, so batch statistics are those of the global
batch (a target's own BatchNorm class is kept: replacing it would no longer test it). Each rank
takes a strided share of every global batch, so the optimisation sees the same global batch as a
single process does; held-out accuracy is summed over ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def describe(self) -> dict:
        info = {"device": str(self.device), "world_size": self.world, "backend": self.backend}
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            info["threads"] = torch.get_num_threads()
        return info


def setup(device: str = "auto") -> Runtime:
    """Pick the device and, under torchrun, join the process group."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available; use --device cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(device=torch.device("cuda" if use_cuda else "cpu"))
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return Runtime(device=dev, rank=rank, world=world, local_rank=local_rank, backend=backend)


def teardown(rt: Runtime) -> None:
    if rt.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: nn.Module, rt: Runtime, *, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel (and SyncBatchNorm on CUDA) when running on several ranks."""
    if not rt.distributed:
        return model
    if sync_bn and rt.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel

    ids = [rt.local_rank] if rt.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_sum(values: list[float], rt: Runtime) -> list[float]:
    """Sum a few numbers over the ranks (identity on one process)."""
    if not rt.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, rt: Runtime) -> bool:
    return all_sum([float(flag)], rt)[0] > 0


def broadcast_object(obj, rt: Runtime):
    """Rank 0's object on every rank (the summary is built on rank 0)."""
    if not rt.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
