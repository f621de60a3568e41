"""Time to accuracy: ResNet-18 on cifar10-jpeg with supkd's fast path, then one KD student.

Trains, through the library's own entry point (``supkd.train.run``), a CE ResNet-18 student
with the fast recipe (one-cycle, label smoothing 0.1, nesterov SGD, batch 512, bf16 +
channels_last + torch.compile + GPU-resident data on CUDA), and then a KD student distilled
from that run (default ``hinton_kl``). For each run it reports the seconds of training, the
compile overhead separately (first epoch's excess over the median epoch), the final test
accuracy (last epoch, as supkd reports it) and the same with flip test-time augmentation.

Recipe variants: ``--variant SPEC`` (repeatable; default ``base``) trains one CE run per
SPEC, in the order given, each with its own row. SPEC is ``NAME[+NAME...][@EPOCHS]``, e.g.
``base@80`` or ``nodecay+ls0@40``; names (see ``VARIANTS``): ``base`` (the recipe),
``nodecay`` (``optim.decay_norm_and_bias=false``), ``ls0`` (label smoothing 0), ``b1024``
(batch 1024, peak lr 0.8), ``ema`` (``train.ema_decay=0.999``), ``ro``
(``train.compile_mode=reduce-overhead``), ``cutout`` / ``cutout8`` (``data.cutout=16`` /
``8``; listed as skipped when this supkd's DataConfig has no ``cutout`` field). The KD run
(unless ``--skip-kd``) distils from the first completed CE run.

``--budget-s S``: a wall-clock budget for the whole script. A run whose estimated time
(from the previous run's epoch time, compile time and overheads) does not fit in what is
left is not started and is listed as skipped, and a run still training when the budget is
spent stops after its current step (listed as stopped). SIGTERM/SIGINT (e.g. a suite's
``timeout``) also end the script cleanly: the table of the rows done so far is printed.

    python benchmarks/time_to_accuracy.py --device cuda --out tta.md
    python benchmarks/time_to_accuracy.py --device cuda --variant base@40 --variant nodecay@40 \
        --skip-kd --budget-s 200
    python benchmarks/time_to_accuracy.py --device cpu --quick      # proves the script runs

``--config`` takes a single-run YAML (e.g. the engine's ``configs/fast/...``) instead of the
built-in recipe; ``--set key=value`` overrides either (variants are applied after it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, find_cifar10_jpeg, markdown_table, write_output
from supkd.errors import UserError
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


#: Recipe variants: name -> (config overrides applied on top of the recipe, description).
VARIANTS: dict[str, tuple[list[str], str]] = {
    "base": ([], "the recipe as it is"),
    "nodecay": (
        ["optim.decay_norm_and_bias=false"],
        "no weight decay on BN weights/biases and biases (He et al. 2019, §3.1)",
    ),
    "ls0": (["task.label_smoothing=0"], "label smoothing 0 (recipe: 0.1)"),
    "b1024": (
        ["train.batch_size=1024", "optim.lr=0.8"],
        "batch 1024, peak lr 0.8 (the recipe's 512 / 0.4, scaled linearly)",
    ),
    "ema": (["train.ema_decay=0.999"], "EMA of the weights, decay 0.999 (evaluated, saved)"),
    "ro": (
        ["train.compile_mode=reduce-overhead"],
        "torch.compile mode reduce-overhead (CUDA graphs)",
    ),
    "cutout": (["data.cutout=16"], "Cutout 16x16 (DeVries & Taylor 2017, CIFAR-10 size)"),
    "cutout8": (["data.cutout=8"], "Cutout 8x8"),
}


def has_cutout() -> bool:
    """Whether this supkd's data config has the ``cutout`` field."""
    import dataclasses

    from supkd.config import DataConfig

    return "cutout" in {f.name for f in dataclasses.fields(DataConfig)}


@dataclass
class Plan:
    """One row to run: a CE variant (or the KD student)."""

    label: str  # the variant spec (or "kd")
    names: list[str]
    epochs: int | None  # None: the config's own
    overrides: list[str]
    skip: str | None = None  # why the row cannot run here


def parse_variant(spec: str, default_epochs: int | None) -> Plan:
    """``NAME[+NAME...][@EPOCHS]`` -> Plan; ValueError with the valid names otherwise.
    ``epochs`` None: the config's own (``--config`` without ``--epochs``)."""
    body, _, ep = spec.partition("@")
    try:
        epochs = int(ep) if ep else default_epochs
    except ValueError:
        raise ValueError(f"variant {spec!r}: epochs after '@' must be an integer") from None
    if epochs is not None and epochs <= 0:
        raise ValueError(f"variant {spec!r}: epochs must be > 0")
    names = [n for n in body.split("+") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if not names or unknown:
        raise ValueError(
            f"variant {spec!r}: unknown name {', '.join(unknown) or '(empty)'}; "
            f"expected NAME[+NAME...][@EPOCHS] with NAME in {', '.join(VARIANTS)}"
        )
    overrides = [o for n in names for o in VARIANTS[n][0]]
    skip = None
    if any(n.startswith("cutout") for n in names) and not has_cutout():
        skip = "skipped: this supkd's DataConfig has no 'cutout' field"
    return Plan(spec, names, epochs, overrides, skip)


def train_one(cfg_dict: dict[str, Any] | str, overrides: list[str], run_dir: Path, device,
              callbacks=()):
    from supkd.train import run
    from supkd.train.checks import load_run_config

    cfg = load_run_config(cfg_dict, overrides)
    print(f"--- training {cfg.name} -> {run_dir}", flush=True)
    result = run(cfg, run_dir, quiet=False, callbacks=callbacks)
    t = timing(run_dir)
    tta = float("nan")
    if result.get("status") == "completed":
        tta = flip_tta_accuracy(run_dir, cfg, device)
    return cfg, result, t, tta


@dataclass
class Row:
    name: str
    variant: str
    epochs: int | None = None
    batch: int | None = None
    result: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    tta: float = float("nan")
    wall_s: float = float("nan")  # the whole row: data, training, evaluations, flip TTA
    status: str = ""


def _fresh_dir(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... when a run directory is already there."""
    out, k = path, 1
    while out.exists():
        k += 1
        out = path.with_name(f"{path.name}-{k}")
    return out


class Budget:
    """The script's wall-clock budget: estimates and a stop callback for runs in progress."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.t0 = time.perf_counter()
        self.hit = False

    def left(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.perf_counter() - self.t0)

    def callback(self, state) -> None:
        if self.left() <= 0:
            self.hit = True
            state.stop = True


def estimate_s(prev: Row | None, epochs: int) -> float | None:
    """Seconds a CE run of ``epochs`` epochs will take, from the last completed row: its
    time per epoch, plus its compile time and its other costs (data, evaluation, flip TTA).
    None before any row completed. A conservative guess: later runs reuse compiled kernels."""
    if prev is None or not prev.timing or prev.timing["train_s"] != prev.timing["train_s"]:
        return None
    per_epoch = prev.timing["train_s"] / max(prev.epochs or 1, 1)
    rest = max(0.0, prev.wall_s - prev.timing["train_s"])  # includes the compile time
    return per_epoch * epochs + rest


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[Plan]]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=["cpu", "cuda"],
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", default=None, help="cifar10-jpeg folder (default: auto-detect)")
    p.add_argument("--config", default=None, help="single-run YAML instead of the recipe")
    p.add_argument("--set", action="append", default=[], help="key=value config override")
    p.add_argument("--epochs", type=int, default=None,
                   help="CE epochs of a variant without @EPOCHS (default 40; --quick 1)")
    p.add_argument("--kd-epochs", type=int, default=None, help="KD epochs (default = --epochs)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME[+NAME...][@EPOCHS]",
                   help=f"CE recipe variant, repeatable, run in order (default base); names: "
                   f"{', '.join(VARIANTS)}")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock budget of the whole script: runs that would not fit are "
                   "skipped, a run in progress stops when it is spent")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.4, help="peak one-cycle lr for the batch")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--subset", type=int, default=None, help="images per split (stratified)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default=None)
    p.add_argument("--kd-loss", default="hinton_kl")
    p.add_argument("--kd-alpha", type=float, default=1.0)
    p.add_argument("--kd-cache", choices=["auto", "on", "off"], default="off",
                   help="teacher cache for the KD run (its build time is reported in the run's "
                   "wall time, not in the epochs)")
    p.add_argument("--skip-kd", action="store_true")
    p.add_argument("--runs-dir", default=None, help="where the runs go (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="CPU smoke run on a tiny subset")
    p.add_argument("--out", default=None, help="also write the Markdown report here")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible")
    if args.quick:
        args.epochs = args.epochs or 1
        args.subset = args.subset or 256
        args.width = min(args.width, 8)
        args.batch_size = min(args.batch_size, 64)
        args.lr = min(args.lr, 0.1)
    # With --config and no --epochs the config's own epochs stand.
    explicit_epochs = args.epochs
    args.epochs = args.epochs or 40
    args.kd_epochs = args.kd_epochs or args.epochs
    args.compile = args.compile or ("on" if args.device == "cuda" else "off")
    default_epochs = args.epochs if args.config is None else explicit_epochs
    try:
        plans = [parse_variant(v, default_epochs) for v in (args.variant or ["base"])]
    except ValueError as exc:
        p.error(str(exc))
    return args, plans


class Session:
    """The script's runs in order: the CE rows, then the KD student of the first completed
    one, within the wall-clock budget; every row is listed from the start, so an
    interruption still shows what was not run."""

    def __init__(self, args: argparse.Namespace, plans: list[Plan]) -> None:
        self.args, self.plans = args, plans
        self.device = torch.device(args.device)
        self.budget = Budget(args.budget_s)
        self.pack = find_cifar10_jpeg(args.data)
        if self.pack is None:
            print("no cifar10-jpeg pack found: using the embedded digits data", flush=True)
        self.runs = (Path(args.runs_dir) if args.runs_dir
                     else Path(tempfile.mkdtemp(prefix="supkd_tta_")))
        self.ce_cfg: dict[str, Any] | str = args.config or ce_recipe(args, self.pack)
        self.rows = [Row("CE ResNet-18", plan.label, plan.epochs) for plan in plans]
        self.kd_row = Row(f"KD ResNet-18 <- CE ResNet-18 ({args.kd_loss})", "kd", args.kd_epochs)
        if not args.skip_kd:
            self.rows.append(self.kd_row)
        self.last_done: Row | None = None
        self.teacher: tuple[Row, Path, Any] | None = None
        self.interrupted = False
        self.cfg0: Any = None  # the first run's config, for the report

    def run_row(self, row: Row, cfg_dict, overrides: list[str], run_dir: Path) -> Any:
        """Train one row; fills ``row``. Returns its config (None when it did not start)."""
        t0 = time.perf_counter()
        try:
            cfg, res, t, tta = train_one(
                cfg_dict, overrides, run_dir, self.device, callbacks=[self.budget.callback]
            )
        except KeyboardInterrupt:  # the budget callback, or SIGTERM/SIGINT
            row.timing = timing(run_dir) if (run_dir / "metrics.jsonl").is_file() else {}
            done = len(read_jsonl(run_dir / "metrics.jsonl")) if row.timing else 0
            why = "budget spent" if self.budget.hit else "interrupted"
            row.status = f"stopped: {why} after {done}/{row.epochs} epochs"
            self.interrupted = self.interrupted or not self.budget.hit
            row.wall_s = time.perf_counter() - t0
            return None
        except UserError as exc:  # a variant this data or config cannot run
            row.status = f"failed: {exc}"
            row.wall_s = time.perf_counter() - t0
            return None
        row.result, row.timing, row.tta = res, t, tta
        row.batch, row.epochs = cfg.train.batch_size, cfg.train.epochs
        row.status = str(res.get("status"))
        row.wall_s = time.perf_counter() - t0
        return cfg

    def run_ce(self, plan: Plan, row: Row) -> None:
        if plan.skip:
            row.status = plan.skip
            return
        if self.interrupted:
            row.status = "not run (interrupted)"
            return
        last = self.last_done
        need = estimate_s(last, plan.epochs or (last.epochs if last else 1))
        left = self.budget.left()
        if left <= 0 or (need is not None and need > left):
            row.status = (
                f"skipped: budget (needs ~{need:.0f} s, {max(left, 0):.0f} s left)"
                if need is not None
                else "skipped: budget spent"
            )
            return
        safe = "".join(c if c.isalnum() else "_" for c in plan.label)
        overrides = [*self.args.set, *plan.overrides]
        if plan.epochs is not None:
            # Only the final evaluation: no evaluation time inside the training time.
            overrides += [f"train.epochs={plan.epochs}", f"train.eval_every={plan.epochs}"]
        run_dir = _fresh_dir(self.runs / f"ce-{safe}")
        cfg = self.run_row(row, self.ce_cfg, overrides, run_dir)
        if cfg is not None:
            self.cfg0 = self.cfg0 or cfg
            if row.status == "completed":
                self.last_done = row
                self.teacher = self.teacher or (row, run_dir, cfg)

    def run_kd(self) -> None:
        args, kd_row = self.args, self.kd_row
        need = estimate_s(self.last_done, args.kd_epochs)
        left = self.budget.left()
        if self.interrupted:
            kd_row.status = "not run (interrupted)"
        elif self.teacher is None:
            kd_row.status = "not run (no completed CE run to distil from)"
        elif left <= 0 or (need is not None and need * 1.5 > left):
            # A live teacher forward makes a KD epoch slower than a CE epoch (H200,
            # benchmarks/RESULTS.md: 1.31 vs 1.11 s); 1.5x leaves a margin.
            kd_row.status = (
                f"skipped: budget (needs ~{1.5 * (need or 0):.0f} s, {max(left, 0):.0f} s left)"
            )
        else:
            trow, tdir, tcfg = self.teacher
            kd_row.name += f" [{trow.variant}]"
            base = ce_recipe(args, self.pack) if args.config is None else tcfg.to_dict()
            kd = kd_recipe(base, tdir, args)
            self.run_row(kd_row, kd, args.set, _fresh_dir(self.runs / "kd"))

    def run(self) -> None:
        try:
            for plan, row in zip(self.plans, self.rows):
                self.run_ce(plan, row)
            if not self.args.skip_kd:
                self.run_kd()
        except KeyboardInterrupt:  # between runs: the rows so far are reported
            self.interrupted = True
            for r in self.rows:
                r.status = r.status or "not run (interrupted)"


def _f(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None or x != x else format(x, spec)


def report_table(rows: list[Row]) -> str:
    headers = ["run", "variant", "epochs", "batch", "train s", "compile s", "wall s (run)",
               "images/s", "test acc %", "test acc % (flip TTA)", "status"]
    table = []
    for r in rows:
        t = r.timing or {}
        table.append([
            r.name, r.variant,
            r.epochs if r.epochs is not None else "-",
            r.batch if r.batch is not None else "-",
            _f(t.get("train_s")), _f(t.get("compile_s")), _f(r.result.get("wall_time_s")),
            _f(t.get("images_per_s"), ",.0f"), _f(r.result.get("test_acc"), ".2f"),
            _f(r.tta, ".2f"), r.status,
        ])
    return markdown_table(headers, table)


def report(session: Session) -> str:
    args, pack, c0 = session.args, session.pack, session.cfg0
    used = sorted({n for pl in session.plans for n in pl.names})
    legend = "; ".join(
        f"{n} = {' '.join(VARIANTS[n][0]) or '-'} ({VARIANTS[n][1]})" for n in used
    )
    if c0 is not None:
        recipe = (
            f"- data: {c0.data.name} {('(' + str(pack) + ')') if pack else ''}, subset "
            f"{c0.data.subset}; model resnet18 width {c0.model.width}; optim "
            f"{c0.optim.name} lr {c0.optim.lr} nesterov {c0.optim.nesterov} wd "
            f"{c0.optim.weight_decay}; schedule {c0.schedule.name}; amp {c0.train.amp}, "
            f"channels_last {c0.train.channels_last}, compile {c0.train.compile} "
            f"({c0.train.compile_mode}) (first run's config)"
        )
    else:
        recipe = "- no run started"
    used_s = time.perf_counter() - session.budget.t0
    budget_line = (
        f"- budget: {args.budget_s:.0f} s wall for the script, {used_s:.0f} s used"
        if args.budget_s is not None
        else f"- wall: {used_s:.0f} s for the script (no budget)"
    )
    return "\n".join([
        "## Time to accuracy (benchmarks/time_to_accuracy.py)",
        "",
        environment(session.device),
        recipe,
        f"- variants: {legend}",
        "- train s: sum of the engine's epoch times (metrics.jsonl) minus the compile "
        "overhead; compile s: first epoch minus the median epoch; test acc: last epoch",
        budget_line,
        f"- runs in {session.runs}",
        "",
        report_table(session.rows),
    ])


def main(argv: list[str] | None = None) -> int:
    args, plans = parse_args(argv)
    _sigterm_as_interrupt()
    session = Session(args, plans)
    session.run()
    write_output(report(session), args.out)
    started = [r for r in session.rows if r.result]
    ok = all(r.status == "completed" for r in started) and not session.interrupted
    return 0 if ok else 1


def _sigterm_as_interrupt() -> None:
    """SIGTERM (a suite's ``timeout``) raises KeyboardInterrupt outside ``fit`` too, so the
    table of the rows done so far is still printed (``fit`` has its own handler)."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    raise SystemExit(main())
