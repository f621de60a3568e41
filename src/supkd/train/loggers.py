"""What a run shows while it trains: the progress bar, the per-epoch line, TensorBoard and
Weights & Biases (both opt-in)."""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supkd.config import WandbConfig
from supkd.errors import ConfigError
from supkd.utils.atomic import atomic_write_text

__all__ = ["WANDB_EXTRA", "TensorBoardLogger", "WandbLogger", "print_epoch", "progress_bar"]

WANDB_EXTRA = "pip install 'supkd[wandb]'"
#: Inside ``RUN/wandb/``: the W&B run id of this supkd run, so a resumed run continues it.
WANDB_ID_FILE = "supkd-run-id"


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


def _numbers(record: Mapping[str, Any]) -> dict[str, float | int]:
    """The numeric fields of a metrics line (booleans and None left out)."""
    return {
        k: v for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"
    }


class WandbLogger:
    """One Weights & Biases run per supkd run (``train.wandb``; a no-op while its
    ``project`` is None, its ``mode`` is ``disabled`` or this is not rank 0).

    The W&B run lives in ``RUN/wandb/`` (offline runs too: ``wandb sync RUN/wandb/offline-
    run-*`` uploads them later), carries the resolved config, and gets every numeric field
    of each ``metrics.jsonl`` line at that line's ``step``. Its id is kept in
    ``RUN/wandb/supkd-run-id``, so ``--resume`` continues the same W&B run (epochs redone
    after a crash are logged at steps W&B has already seen, which it ignores). wandb is
    imported only here: a run without ``train.wandb`` never loads it.
    """

    def __init__(
        self,
        cfg: WandbConfig,
        folder: Path | None,
        *,
        config: Mapping[str, Any],
        name: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.run: Any = None
        if not enabled or cfg.project is None or cfg.mode == "disabled":
            return
        if folder is None:
            print("supkd: train.wandb needs a run directory; not logging to W&B", file=sys.stderr)
            return
        try:
            import wandb  # optional dependency
        except ImportError:
            raise ConfigError(f"config field 'train.wandb.project': logging to W&B needs the "
                              f"wandb package: {WANDB_EXTRA}") from None
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=cfg.mode,
            dir=str(folder.parent),  # wandb adds its own "wandb/" below
            id=self._run_id(folder),
            resume="allow",
            name=name,
            config=dict(config),
            # Runs of a grid in one process are separate W&B runs, never a previous one's.
            reinit="create_new",
            settings=wandb.Settings(
                silent=True, console="off", disable_git=True, save_code=False,
            ),
        )

    @staticmethod
    def _run_id(folder: Path) -> str:
        path = folder / WANDB_ID_FILE
        if path.is_file():
            stored = path.read_text(encoding="utf-8").strip()
            if re.fullmatch(r"[a-z0-9]{1,64}", stored):
                return stored
        run_id = secrets.token_hex(6)  # W&B ids: lowercase letters and digits
        atomic_write_text(path, run_id + "\n")
        return run_id

    def log(self, record: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.log(_numbers(record), step=int(record["step"]))

    def close(self, ok: bool = True) -> None:
        """Finish the W&B run (exit code 1 for a run that diverged or stopped early)."""
        if self.run is not None:
            self.run.finish(exit_code=0 if ok else 1)
            self.run = None
