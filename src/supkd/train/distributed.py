"""Multi-process training (DDP) helpers, and the gradient-carrying all-gather.

Launch: ``torchrun --nproc_per_node N -m supkd train CONFIG``. torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them and joins the process group (NCCL on CUDA, gloo on CPU). Without them (a plain
``supkd train``) it is a no-op that returns ``DistInfo(enabled=False, rank=0, world_size=1)``,
and every helper here degrades to the single-process identity, so the engine and the tasks
call them unconditionally.

Why a gather of our own (docs/design.md §8 and §10)
-----------------------------------------------
SupCon (Khosla et al. 2020, Eq. 2), ``supcon_kd`` (paper Eq. 5) and the sample-mode ``gram``
loss (paper Eq. 4) compare every sample of the batch with every other one, so under DDP they
must see the *global* batch, or each rank trains with 1/W of the negatives. The usual fix in
public code, ``torch.distributed.all_gather`` into a list, returns tensors with no autograd
history: the other ranks' samples become constants, and the gradient that rank k's loss sends
to rank r's samples is lost. (Putting the local tensor back into its own slot, the common
patch, keeps only the local part of that gradient; see the worked scaling below.)

:func:`gather_with_grad` is an ``autograd.Function`` whose forward concatenates the W local
batches into one (W·B, ...) tensor and whose backward *sums* the incoming gradients over the
ranks and hands each rank its own B rows (a reduce-scatter; all-reduce + slice on backends
without it). ``torch.distributed.nn.functional.all_gather`` does the same maths, but in torch
2.14 it is deprecated (FutureWarning on every call), returns a tuple of W tensors instead of
one, and emulates reduce-scatter on gloo with an all-to-all; its suggested replacement lives
in the private ``_functional_collectives`` module. Twenty lines of our own are easier to keep.

How the tasks use it, and why the gradients are exactly the one-process gradients
----------------------------------------------------------------------------------
Convention (the one the tasks follow and tests/train/test_distributed.py checks): **every
rank computes the contrastive loss over the whole gathered batch**, L = ℓ(G) with
G = gather(x_0, ..., x_{W-1}) of shape (W·B, D). Every rank holds the same G (same bytes) and
runs the same deterministic ℓ, so every rank has the same value L, equal to the value one
process gets on the concatenated batch, and the same upstream gradient g = ∂L/∂G.

- Backward of the gather on rank r: Σ_k g (one identical g from each of the W ranks) = W·g,
  sliced to rank r's rows: ∂/∂x_r = W·g_r = W·∂L/∂x_r.
- Rank r's parameter gradient is therefore W·(∂L/∂x_r)(∂x_r/∂θ): only its own samples' path,
  times W.
- DDP averages parameter gradients over ranks: (1/W)·Σ_r W·(∂L/∂x_r)(∂x_r/∂θ)
  = Σ_r (∂L/∂x_r)(∂x_r/∂θ) = ∂L/∂θ, the one-process gradient on the concatenated batch.

Per-sample terms (cross-entropy in ``distill``, Eq. 6) stay local means: with equal B per rank,
DDP's average of the W local means is the global mean. So the total loss
CE_local + α·L_KD(gathered) gives, after DDP, exactly the gradient of CE + α·L_KD on the
global batch. What each rank *reports* as its loss is CE_r + α·L_KD; the mean over ranks is the
global value.

The "own slot" patch, by contrast, gives ∂/∂x_r = g_r (no factor W), so after DDP averaging
the gradient is ∂L/∂θ / W: a silent learning-rate cut by the number of GPUs. With the other
common usage (each rank's local anchors against the gathered contrast set) it is worse: the
gradient that other ranks' anchors send to rank r's samples as contrasts is dropped entirely.
With the summing backward used here, any per-rank losses L_k are handled correctly: DDP then
descends (1/W)·Σ_k L_k.

Equal batch sizes on every rank are required (the collectives need them, and the mean of
per-rank means equals the global mean only then); :func:`gather_with_grad` checks the shapes
across ranks and raises a ValueError naming them otherwise. Training loaders under DDP should
drop the last incomplete batch.

BatchNorm: DDP keeps per-rank batch statistics (what public multi-GPU SupCon code does as
well); ``wrap_ddp(..., sync_batchnorm=True)`` converts to SyncBatchNorm on CUDA.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from supkd.errors import UserError
from supkd.utils.device import resolve_device

__all__ = [
    "DistInfo",
    "all_reduce_max",
    "all_reduce_mean",
    "all_reduce_min",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup",
    "gather_with_grad",
    "info",
    "init_distributed",
    "is_enabled",
    "is_main",
    "rank",
    "replica_fingerprints",
    "replicas_in_sync",
    "state_fingerprint",
    "unwrap_ddp",
    "world_size",
    "wrap_ddp",
]

# torch 2.14 renamed the tensor collectives (the old names warn on every call); torch >= 2.4
# (our floor in pyproject) only has the old ones.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

_MAX_NDIM = 8  # the cross-rank shape check sends a fixed-length shape vector
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    ``device`` is the device this rank trains on (``cuda:LOCAL_RANK`` under NCCL).
    ``enabled`` is False for a single process; then ``rank == 0`` and ``world_size == 1``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU
    enabled: bool = False
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO: DistInfo | None = None


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        if default is None:
            raise UserError(
                f"environment variable {name}: expected an integer set by torchrun, got nothing"
            )
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}: expected an integer, got {raw!r}") from None


def _resolve_device(device: str | torch.device | None) -> torch.device:
    return resolve_device(device)


def init_distributed(
    device: str | torch.device | None = None,
    *,
    backend: str | None = None,
    timeout_s: float = 1800.0,
) -> DistInfo:
    """Join the torchrun process group if this process was launched by torchrun.

    ``device``: what the run asked for (``"cpu"``, ``"cuda"``, ``"auto"``/None = CUDA when
    available). Under torchrun a CUDA run uses ``cuda:LOCAL_RANK`` (and makes it the current
    device) with NCCL; a CPU run uses gloo. ``backend`` overrides that choice.

    Not launched distributed (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``): no process group, returns
    ``DistInfo(enabled=False, rank=0, world_size=1, device=<resolved device>)``. Calling it
    again (or after the caller initialised the group itself) reuses the existing group.
    Bad torchrun variables raise :class:`~supkd.errors.UserError` naming the variable.
    """
    global _INFO
    wanted = _resolve_device(device)
    if dist.is_available() and dist.is_initialized():
        _INFO = _info_from_group(wanted)
        return _INFO

    world = _env_int("WORLD_SIZE", default=1)
    if world < 1:
        raise UserError(f"environment variable WORLD_SIZE: expected an integer >= 1, got {world}")
    if world == 1:
        _INFO = DistInfo(device=wanted)
        return _INFO
    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")

    rank_ = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", default=0)
    if not 0 <= rank_ < world:
        raise UserError(f"environment variable RANK: expected 0 <= RANK < {world}, got {rank_}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise UserError(
                f"environment variable {name}: expected it set by torchrun, got nothing"
            )

    if wanted.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("config field 'device': expected cpu, CUDA is not available here")
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"environment variable LOCAL_RANK: expected < {torch.cuda.device_count()} "
                f"(visible GPUs), got {local_rank}"
            )
        # One GPU per process, chosen by torchrun's LOCAL_RANK, whatever index was asked for.
        wanted = torch.device("cuda", local_rank)
        torch.cuda.set_device(wanted)
        backend = backend or "nccl"
    elif wanted.type == "cpu":
        backend = backend or "gloo"
    else:
        raise UserError(
            f"config field 'device': expected cpu or cuda under torchrun, got {wanted.type!r}"
        )

    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        # Binds the communicator to this GPU up front (no guessing in barrier()).
        kwargs["device_id"] = wanted
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank_,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
        **kwargs,
    )
    _INFO = DistInfo(
        rank=rank_,
        world_size=world,
        local_rank=local_rank,
        device=wanted,
        enabled=True,
        backend=backend,
    )
    return _INFO


def _info_from_group(wanted: torch.device) -> DistInfo:
    backend = str(dist.get_backend())
    local_rank = _env_int("LOCAL_RANK", default=0)
    if wanted.type == "cuda" and wanted.index is None:
        wanted = torch.device("cuda", local_rank)
    world = dist.get_world_size()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=world,
        local_rank=local_rank,
        device=wanted,
        enabled=world > 1,
        backend=backend,
    )


def is_enabled() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info() -> DistInfo:
    """The DistInfo of the last :func:`init_distributed` (a single-process one before)."""
    return _INFO if _INFO is not None else DistInfo()


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and logs."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank; no-op in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of a run); no-op when there is none."""
    global _INFO
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _INFO = None


def wrap_ddp(
    module: nn.Module,
    info: DistInfo,
    *,
    find_unused_parameters: bool = False,
    sync_batchnorm: bool = False,
) -> nn.Module:
    """Wrap ``module`` in DistributedDataParallel when ``info.enabled``, else return it as is.

    The module must already be on ``info.device``. DDP broadcasts rank 0's parameters and
    buffers at construction, so every rank starts from the same weights whatever its seed,
    then averages gradients over ranks in backward (see the module docstring for why that
    average is the right one with :func:`gather_with_grad`). ``sync_batchnorm`` converts
    BatchNorm layers to SyncBatchNorm (CUDA only: torch implements it with CUDA kernels).
    """
    if not info.enabled:
        return module
    if sync_batchnorm:
        if info.device.type != "cuda":
            raise ValueError(
                "wrap_ddp: sync_batchnorm=True needs CUDA (SyncBatchNorm has no CPU path)"
            )
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if info.device.type == "cuda":
        return nn.parallel.DistributedDataParallel(
            module,
            device_ids=[info.device.index],
            output_device=info.device.index,
            find_unused_parameters=find_unused_parameters,
        )
    return nn.parallel.DistributedDataParallel(
        module, find_unused_parameters=find_unused_parameters
    )


def unwrap_ddp(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (state dicts without the ``module.`` prefix)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _check_same_shape(x: torch.Tensor, world: int) -> None:
    """All ranks must send the same shape; collective, so every rank raises together."""
    if not 1 <= x.dim() <= _MAX_NDIM:
        raise ValueError(
            f"gather_with_grad: expected a (B, ...) tensor with 1 to {_MAX_NDIM} dims, "
            f"got shape {tuple(x.shape)}"
        )
    local = torch.full((_MAX_NDIM + 1,), -1, dtype=torch.int64, device=x.device)
    local[0] = x.dim()
    local[1 : 1 + x.dim()] = torch.tensor(x.shape, dtype=torch.int64)
    # Concatenated (not stacked) output: gloo only supports that form.
    shapes = torch.empty(world * (_MAX_NDIM + 1), dtype=torch.int64, device=x.device)
    _all_gather_single(shapes, local)
    rows = shapes.view(world, -1).tolist()
    if any(r != rows[0] for r in rows):
        described = [tuple(r[1 : 1 + r[0]]) for r in rows]
        raise ValueError(
            "gather_with_grad: expected the same tensor shape on every rank (equal per-rank "
            f"batch sizes: drop the last incomplete batch), got {described} "
            f"for ranks 0..{world - 1}"
        )


def _gather_no_grad(x: torch.Tensor, world: int) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty((world * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    _all_gather_single(out, x)
    return out


class _GatherWithGrad(torch.autograd.Function):
    """forward: (B, ...) -> (W·B, ...) in rank order; backward: sum over ranks, own rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.world = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.batch = x.shape[0]
        return _gather_no_grad(x, ctx.world)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            out = torch.empty((ctx.batch, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            _reduce_scatter_single(out, grad, op=dist.ReduceOp.SUM)
            return out
        # gloo builds before torch 2.x lacked reduce-scatter; all-reduce + slice is the same
        # sum with W times the traffic, which on CPU is not the bottleneck. Clone: the incoming
        # gradient may be shared with other autograd branches and all_reduce is in place.
        summed = grad.clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather_with_grad(x: torch.Tensor, *, check_shapes: bool = True) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0, keeping the gradient path to each rank.

    x: (B, ...) on this rank's device, the same shape on every rank. Returns (W·B, ...) with
    rank r's rows at ``[r·B, (r+1)·B)``; identity in a single process. Backward returns to each
    rank the sum over ranks of the gradient w.r.t. its rows (derivation and the DDP scaling in
    the module docstring). Tensors that need no gradient (labels, frozen-teacher features) are
    gathered plainly. ``check_shapes`` runs one small extra collective to turn a mismatched
    batch into a clear ValueError instead of a hang or garbage.
    """
    if not is_enabled():
        return x
    if x.dim() == 0:
        raise ValueError("gather_with_grad: expected a (B, ...) tensor, got a 0-dim tensor")
    world = dist.get_world_size()
    if check_shapes:
        _check_same_shape(x, world)
    if x.requires_grad and torch.is_grad_enabled():
        return _GatherWithGrad.apply(x)
    return _gather_no_grad(x, world)


def _all_reduce(x: torch.Tensor, op: Any) -> torch.Tensor:
    """``op`` of ``x`` over ranks, as a new tensor (``x`` itself in a single process)."""
    if not is_enabled():
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=op)
    return out


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (a new tensor; ``x`` itself in a single process)."""
    return _all_reduce(x, dist.ReduceOp.SUM)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks, e.g. the logged training loss (equal-sized shards)."""
    if not is_enabled():
        return x
    return all_reduce_sum(x.float() if not x.is_floating_point() else x) / dist.get_world_size()


def all_reduce_min(x: torch.Tensor) -> torch.Tensor:
    """Element-wise minimum over ranks (e.g. the first non-finite step any rank saw)."""
    return _all_reduce(x, dist.ReduceOp.MIN)


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks (e.g. "did any rank ask to stop")."""
    return _all_reduce(x, dist.ReduceOp.MAX)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (e.g. a decision only rank 0 can make)."""
    if not is_enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def state_fingerprint(module: nn.Module, *, buffers: bool = True) -> str:
    """SHA-256 of the module's parameters (and buffers): names, dtypes, shapes, exact bytes."""
    m = unwrap_ddp(module)
    tensors = dict(m.named_parameters())
    if buffers:
        tensors.update(m.named_buffers())
    h = hashlib.sha256()
    for name, t in sorted(tensors.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # Byte view through uint8 works for every dtype numpy lacks (bfloat16).
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def replica_fingerprints(module: nn.Module, *, buffers: bool = False) -> list[str]:
    """Every rank's :func:`state_fingerprint` of ``module``, in rank order (collective).

    One entry in a single process. A run can record it so that anyone can check afterwards
    that all ranks ended with the weights rank 0 saved.
    """
    fp = state_fingerprint(module, buffers=buffers)
    if not is_enabled():
        return [fp]
    prints: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(prints, fp)
    return [str(p) for p in prints]


def replicas_in_sync(module: nn.Module, *, buffers: bool = False) -> bool:
    """True when every rank holds bit-identical parameters (collective; True in one process).

    A cheap end-of-run guard for DDP: parameters drift apart only through a bug (a parameter
    updated outside backward, a skipped all-reduce, rank-dependent optimizer state).
    Buffers are left out by default because DDP broadcasts rank 0's buffers at the *start* of
    each forward and BatchNorm then updates its running statistics from the local batch, so
    after the last step they legitimately differ per rank (rank 0's are the ones saved).
    """
    prints = replica_fingerprints(module, buffers=buffers)
    return all(p == prints[0] for p in prints)
