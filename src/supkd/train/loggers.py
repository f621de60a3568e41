"""What a run shows while it trains: the progress bar, the per-epoch line, TensorBoard and
Weights & Biases (both opt-in)."""

from __future__ import annotations

import netrc
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from supkd.config import WandbConfig
from supkd.errors import ConfigError
from supkd.utils.atomic import atomic_write_text

__all__ = ["WANDB_EXTRA", "TensorBoardLogger", "WandbLogger", "check_wandb", "print_epoch",
           "progress_bar"]

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


def _wandb_login_found() -> bool:
    """Whether wandb would find credentials without asking: ``WANDB_API_KEY``, an
    identity-token file, or the ``~/.netrc`` entry ``wandb login`` writes for the W&B host
    (``WANDB_BASE_URL``, default api.wandb.ai). Reads files only: never contacts a server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host or "api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def check_wandb(cfg: WandbConfig, where: str = "") -> None:
    """ConfigError, before any training, when ``train.wandb`` asks for what is not there:
    an empty project name, the wandb package, or (online) a W&B login. ``where`` prefixes
    the message (a grid names its run). A no-op while W&B logging is off."""
    if cfg.project is None:
        return
    mode = cfg.mode or os.environ.get("WANDB_MODE") or "online"
    if mode == "disabled":
        return
    if not cfg.project.strip():
        raise ConfigError(f"{where}config field 'train.wandb.project': expected a W&B project "
                          "name, got an empty one (null: no W&B logging)")
    try:
        import wandb  # noqa: F401 (only whether it is there)
    except ImportError:
        raise ConfigError(f"{where}config field 'train.wandb.project': logging to W&B needs "
                          f"the wandb package, which is not installed: {WANDB_EXTRA}") from None
    if mode == "online" and not _wandb_login_found():
        raise ConfigError(
            f"{where}config field 'train.wandb.mode': online W&B logging needs a W&B login "
            "and none was found (no WANDB_API_KEY, no entry in ~/.netrc); run `wandb login`, "
            "set WANDB_API_KEY, or set train.wandb.mode: offline (upload later with "
            "`wandb sync`)")


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
