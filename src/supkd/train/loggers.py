"""What a run shows while it trains: the progress bar, the per-epoch line, TensorBoard."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["TensorBoardLogger", "print_epoch", "progress_bar"]


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr over ``total`` steps, or None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm  # only when a bar is shown

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def print_epoch(record: dict[str, Any], epochs: int) -> None:
    """One stderr line per epoch (when no progress bar is shown)."""
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for k in ("train_loss", "test_acc", "val_acc"):
        v = record.get(k)
        if v is not None:
            parts.append(f"{k} {v:.4g}")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    print("  ".join(parts), file=sys.stderr, flush=True)


class TensorBoardLogger:
    """Every numeric value of each epoch record as a scalar in ``folder`` (when enabled and
    TensorBoard is installed; a no-op otherwise)."""

    def __init__(self, folder: Path | None, enabled: bool) -> None:
        self.writer = None
        if not enabled or folder is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency
        except ImportError:
            print("supkd: train.tensorboard is on but not installed", file=sys.stderr)
            return
        self.writer = SummaryWriter(str(folder))

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = record["step"]
        for k, v in record.items():
            if isinstance(v, int | float) and k not in ("step", "epoch") and v is not None:
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
