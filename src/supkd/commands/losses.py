"""``supkd losses``: list the registered KD losses and the SupCon pre-training loss.

One row per loss: registry name, paper equation, one-line description, and constructor
arguments with their defaults (what a config's ``task.loss_args`` may set). Everything
shown is the loss class's own metadata (:class:`supkd.losses.KDLoss`), so a loss registered
by a plugin (``supkd --plugin MODULE losses``) is listed like the built-in ones.
"""

from __future__ import annotations

import argparse
import json

HELP = "list the distillation losses (name, paper equation, description, arguments)"

PRETRAIN_NAME = "SupConLoss"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the table as JSON instead of text"
    )


def _rows() -> list[dict[str, object]]:
    from supkd.losses import LOSSES, SupConLoss, loss_arguments, loss_label

    rows: list[dict[str, object]] = []
    for name, cls in LOSSES.items():
        rows.append(
            {
                "name": name,
                "kind": "kd",
                "paper": cls.paper_eq,
                "description": cls.summary,
                "label": loss_label(name),
                "reference": cls.reference,
                "module": cls.__module__,
                "arguments": loss_arguments(cls),
                "needs_labels": cls.needs_labels,
                "compares_samples": cls.compares_samples,
                "same_width": cls.same_width,
                "needs_index": cls.needs_index,
                "multi_stage": cls.multi_stage,
            }
        )
    rows.append(
        {
            "name": PRETRAIN_NAME,
            "kind": "pretrain",
            "paper": "Khosla et al. 2020",
            "description": "teacher pre-training (SimCLR when labels are None)",
            "label": "SupCon (Khosla et al. 2020)",
            "reference": 'Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020',
            "module": SupConLoss.__module__,
            "arguments": loss_arguments(SupConLoss),
            "needs_labels": False,
            "compares_samples": True,
            "same_width": True,
            "needs_index": False,
            "multi_stage": False,
        }
    )
    return rows


def _format_args(args: dict[str, object]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items()) or "-"


def run(args: argparse.Namespace) -> int:
    rows = _rows()
    if args.json:
        print(json.dumps(rows, indent=2, default=repr))
        return 0
    header = ("name", "paper", "description", "arguments (defaults)")
    table = [header] + [
        (str(r["name"]), str(r["paper"]), str(r["description"]), _format_args(r["arguments"]))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for i, row in enumerate(table):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)]
        print("  ".join([*cells, row[-1]]).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in [*widths, len(header[-1])]))
    print()
    print("KD call:       loss(student (B, D_s), teacher (B, D_t), labels (B,) | None)")
    print("               + index=(B,) dataset indices for losses with state (crd; after bind)")
    staged = [str(r["name"]) for r in rows if r["multi_stage"]]
    if staged:
        print(f"stage losses:  loss([s_1..s_K], [t_1..t_K], labels), one tensor per stage read "
              f"(task.loss_args.stages): {', '.join(staged)}")
    print("pre-training:  SupConLoss(...)(features (B, V, D) L2-normalized, labels (B,) | None)")
    return 0
