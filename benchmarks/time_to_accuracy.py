"""Time to accuracy: ResNet-18 on cifar10-jpeg with supkd's fast path, then one KD student.

Trains, through the library's own entry point (``supkd.train.run``), a CE ResNet-18 student
with the fast recipe (one-cycle, label smoothing 0.1, nesterov SGD, batch 512, bf16 +
channels_last + torch.compile + GPU-resident data on CUDA), and then a KD student distilled
from that run (default ``hinton_kl``). For each run it reports the seconds of training, the
compile overhead separately (first epoch's excess over the median epoch), the final test
accuracy (last epoch, as supkd reports it) and the same with flip test-time augmentation.

    python benchmarks/time_to_accuracy.py --device cuda --out tta.md
    python benchmarks/time_to_accuracy.py --device cpu --quick      # proves the script runs

``--config`` takes a single-run YAML (e.g. the engine's ``configs/fast/...``) instead of the
built-in recipe; ``--set key=value`` overrides either.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, find_cifar10_jpeg, markdown_table, write_output
from supkd.utils.atomic import read_jsonl


def ce_recipe(args: argparse.Namespace, data_root: Path | None) -> dict[str, Any]:
    """The fast CE recipe (issue #7's one-cycle + label smoothing recipe, with nesterov and
    flip TTA at evaluation; bf16/channels_last/compile are the engine's CUDA defaults)."""
    data: dict[str, Any] = (
        {"name": "cifar10-jpeg", "root": str(data_root)} if data_root else {"name": "digits"}
    )
    data.update({"val_fraction": 0.0, "subset": args.subset})
    return {
        "name": "tta_ce_resnet18",
        "seed": args.seed,
        "device": args.device,
        "data": data,
        "model": {"name": "resnet18", "stem": "cifar", "width": args.width},
        "optim": {
            "name": "sgd",
            "lr": args.lr,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": args.weight_decay,
        },
        "schedule": {
            "name": "onecycle",
            "pct_start": 0.25,
            "div_factor": 25.0,
            "final_div_factor": 1e4,
        },
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "eval_batch_size": 1024,
            "eval_every": args.epochs,  # only the final evaluation: no eval time inside
            "compile": args.compile,
            "progress": False,
        },
        "task": {"name": "ce", "label_smoothing": 0.1},
    }


def kd_recipe(ce: dict[str, Any], teacher_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ce.items()}
    cfg["name"] = f"tta_kd_{args.kd_loss}_resnet18"
    cfg["train"] = {**cfg["train"], "epochs": args.kd_epochs, "eval_every": args.kd_epochs}
    cfg["task"] = {
        "name": "distill",
        "teacher": str(teacher_dir),
        "loss": args.kd_loss,
        "alpha": args.kd_alpha,
        "label_smoothing": 0.1,
        "teacher_cache": args.kd_cache,
    }
    return cfg


def timing(run_dir: Path) -> dict[str, float]:
    """Training seconds and compile overhead from the engine's metrics.jsonl."""
    epochs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "epoch_time_s" in r]
    times = [float(r["epoch_time_s"]) for r in epochs]
    if not times:
        return {"train_s": float("nan"), "compile_s": float("nan"), "images_per_s": float("nan")}
    # The first epoch carries compilation/autotuning; the last one the only evaluation.
    steady = statistics.median(times[1:-1] or times[1:] or times)
    compile_s = max(0.0, times[0] - steady)
    rates = [float(r.get("images_per_s", 0)) for r in (epochs[1:-1] or epochs)]
    return {
        "train_s": sum(times) - compile_s,
        "compile_s": compile_s,
        "images_per_s": statistics.median(rates),
    }


@torch.no_grad()
def flip_tta_accuracy(run_dir: Path, cfg: Any, device: torch.device) -> float:
    """Test accuracy (%) of the run's model with logits averaged over the image and its
    horizontal mirror (flip test-time augmentation)."""
    from supkd.data import build_data, make_loader
    from supkd.models import as_model_output
    from supkd.train.checkpoint import load_model

    model = load_model(run_dir).to(device).eval()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    bundle = build_data(cfg.data, seed=cfg.seed)
    loader = make_loader(bundle, "test", 1024, train=False, device=device, seed=0, num_workers=0)
    correct = total = 0
    for batch in loader:
        x = batch.x.contiguous(memory_format=torch.channels_last) if cuda else batch.x
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = as_model_output(model(x)).logits.float()
            logits = logits + as_model_output(model(x.flip(-1))).logits.float()
        correct += int((logits.argmax(1) == batch.y).sum())
        total += int(batch.y.numel())
    return 100.0 * correct / max(total, 1)


def train_one(cfg_dict: dict[str, Any] | str, overrides: list[str], run_dir: Path, device):
    from supkd.experiments.config import load_config
    from supkd.train import run

    cfg = load_config(cfg_dict, overrides)
    print(f"--- training {cfg.name} -> {run_dir}", flush=True)
    result = run(cfg, run_dir, quiet=False)
    t = timing(run_dir)
    tta = float("nan")
    if result.get("status") == "completed":
        tta = flip_tta_accuracy(run_dir, cfg, device)
    return cfg, result, t, tta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cuda" if torch.cuda.is_available() else "cpu",
    )
    p.add_argument("--data", default=None, help="cifar10-jpeg folder (default: auto-detect)")
    p.add_argument("--config", default=None, help="single-run YAML instead of the recipe")
    p.add_argument("--set", action="append", default=[], help="key=value config override")
    p.add_argument("--epochs", type=int, default=None, help="CE epochs (default 40; --quick 1)")
    p.add_argument("--kd-epochs", type=int, default=None, help="KD epochs (default = --epochs)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.4, help="peak one-cycle lr for the batch")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--subset", type=int, default=None, help="images per split (stratified)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default=None)
    p.add_argument("--kd-loss", default="hinton_kl")
    p.add_argument("--kd-alpha", type=float, default=1.0)
    p.add_argument(
        "--kd-cache",
        choices=["auto", "on", "off"],
        default="off",
        help="teacher cache for the KD run (its build time is reported in the run's wall "
        "time, not in the epochs)",
    )
    p.add_argument("--skip-kd", action="store_true")
    p.add_argument("--runs-dir", default=None, help="where the runs go (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="CPU smoke run on a tiny subset")
    p.add_argument("--out", default=None, help="also write the Markdown report here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible")
    if args.quick:
        args.epochs = args.epochs or 1
        args.subset = args.subset or 256
        args.width = min(args.width, 8)
        args.batch_size = min(args.batch_size, 64)
        args.lr = min(args.lr, 0.1)
    args.epochs = args.epochs or 40
    args.kd_epochs = args.kd_epochs or args.epochs
    args.compile = args.compile or ("on" if device.type == "cuda" else "off")
    pack = find_cifar10_jpeg(args.data)
    if pack is None:
        print("no cifar10-jpeg pack found: using the embedded digits data", flush=True)

    runs = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="supkd_tta_"))
    ce_cfg: dict[str, Any] | str = args.config or ce_recipe(args, pack)
    rows = []
    cfg, res, t, tta = train_one(ce_cfg, args.set, runs / "ce", device)
    rows.append(("CE ResNet-18", cfg, res, t, tta))
    if not args.skip_kd and res.get("status") == "completed":
        base = ce_recipe(args, pack) if args.config is None else cfg.to_dict()
        kd = kd_recipe(base, runs / "ce", args)
        kcfg, kres, kt, ktta = train_one(kd, args.set, runs / "kd", device)
        rows.append((f"KD ResNet-18 <- CE ResNet-18 ({args.kd_loss})", kcfg, kres, kt, ktta))

    def f(x: Any, spec: str = ".1f") -> str:
        return "-" if x is None or x != x else format(x, spec)

    headers = [
        "run",
        "epochs",
        "batch",
        "train s",
        "compile s",
        "wall s (run)",
        "images/s",
        "test acc %",
        "test acc % (flip TTA)",
        "status",
    ]
    table = [
        [
            name,
            c.train.epochs,
            c.train.batch_size,
            f(t["train_s"]),
            f(t["compile_s"]),
            f(r.get("wall_time_s")),
            f(t["images_per_s"], ",.0f"),
            f(r.get("test_acc"), ".2f"),
            f(tta, ".2f"),
            r.get("status"),
        ]
        for name, c, r, t, tta in rows
    ]
    c0 = rows[0][1]
    text = "\n".join(
        [
            "## Time to accuracy (benchmarks/time_to_accuracy.py)",
            "",
            environment(device),
            f"- data: {c0.data.name} {('(' + str(pack) + ')') if pack else ''}, subset "
            f"{c0.data.subset}; model resnet18 width {c0.model.width}; optim "
            f"{c0.optim.name} lr {c0.optim.lr} nesterov {c0.optim.nesterov} wd "
            f"{c0.optim.weight_decay}; schedule {c0.schedule.name}; amp {c0.train.amp}, "
            f"channels_last {c0.train.channels_last}, compile {c0.train.compile}",
            "- train s: sum of the engine's epoch times (metrics.jsonl) minus the compile "
            "overhead; compile s: first epoch minus the median epoch; test acc: last epoch",
            f"- runs in {runs}",
            "",
            markdown_table(headers, table),
        ]
    )
    write_output(text, args.out)
    return 0 if all(r.get("status") == "completed" for _, _, r, _, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
