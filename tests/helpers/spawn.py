"""DDP ranks on CPU for tests: ``torch.multiprocessing.spawn`` with a fresh loopback port,
each rank's result saved to a file, every rank's traceback shown when one fails, and one
retry for the gloo start-up abort of a loaded machine."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from supkd.utils.ports import free_port

Worker = Callable[..., Any]


def _rank_main(rank: int, worker: Worker, port: int, out_dir: str, args: tuple) -> None:
    """One rank: ``worker(rank, port, out_dir, *args)``; its return value is saved as
    ``rank{rank}.pt``, its traceback (if it raised) as ``error{rank}.txt``."""
    from supkd.train import distributed as D

    torch.set_num_threads(1)
    try:
        res = worker(rank, port, out_dir, *args)
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    except BaseException:
        # Saved, then re-raised: spawn() stops the other ranks and the test shows this trace.
        Path(out_dir, f"error{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        D.cleanup()


def spawn_ranks(
    worker: Worker,
    world: int,
    tmp_path_factory: pytest.TempPathFactory,
    *args: Any,
    prepare: Callable[[Path], None] | None = None,
    name: str = "ranks",
) -> list[Any]:
    """Run ``worker(rank, port, out_dir, *args)`` on ``world`` processes (``worker``: a
    module-level function, picklable) and return what each rank returned, in rank order.
    ``prepare(out_dir)`` runs first (e.g. saves the inputs the ranks read).

    One retry, on a fresh port and folder, only when a worker died by a signal without
    raising (no error file): on the 2-core CI box both gloo workers have aborted in C++
    ("terminate called without an active exception") with no Python error, in about one of
    four full-suite runs. A worker that raised (a real failure) fails the test at once.
    """
    for attempt in range(2):
        d = tmp_path_factory.mktemp(name)
        if prepare is not None:
            prepare(d)
        try:
            mp.spawn(_rank_main, args=(worker, free_port(), str(d), args), nprocs=world)
            break
        except Exception as exc:
            errors = "\n".join(p.read_text() for p in sorted(d.glob("error*.txt")))
            died = isinstance(exc, mp.ProcessExitedException) and exc.signal_name is not None
            if attempt == 0 and died and not errors:
                continue
            pytest.fail(f"distributed worker failed: {exc}\n{errors}")
    return [torch.load(d / f"rank{r}.pt", weights_only=False) for r in range(world)]


def train_global_batches(task: Any, step_module: Callable[[Any], dict], rows_of_step: Callable,
                         data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *, steps: int,
                         global_batch: int, lr: float) -> torch.Tensor:
    """SGD (momentum 0.9) of ``task`` over ``steps`` global batches of ``global_batch``
    samples taken in ``data``'s order; ``rows_of_step`` picks what one process sees of each
    (a rank's share under DDP, all of it for the single-process reference), and
    ``step_module`` is the task or its DDP wrap. Returns each step's KD term, (steps,).

    The loop the DDP-equals-one-process tests share: both sides run exactly these steps.
    """
    from supkd.data import Batch

    x, y, order = data
    n = len(order)
    opt = torch.optim.SGD(task.trainable_parameters(), lr=lr, momentum=0.9)
    task.train()
    losses = []
    for step in range(steps):
        idx = rows_of_step(order[(step * global_batch) % n:][:global_batch])
        out = step_module(Batch(x[idx], y[idx], idx))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        losses.append(out["kd"].detach())
    return torch.stack(losses)
