"""``supkd models``: list the model zoo with parameter counts, then every other model name.

The zoo (:mod:`supkd.models.zoo`: the KD benchmark's CIFAR-100 architectures, named as
RepDistiller and mdistiller name them, and ImageNet's MobileNetV1) is listed one row per
model: name, parameters at its benchmark's classes (100; 1,000 for MobileNetV1, or
``--classes N``), embedding width and stage names. Counts include the classifier, not a
projection head. The other registered names (supkd's ResNets, a plugin's models) and the
families (``timm/<name>``) follow on one line each.
"""

from __future__ import annotations

import argparse
import json

HELP = "list the model zoo (KD benchmark architectures) with parameter counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", type=int, default=None, metavar="N",
                        help="count parameters at N classes (default: 100; 1000 for "
                        "MobileNetV1)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def _rows(classes: int | None) -> list[dict[str, object]]:
    import torch

    from supkd.models import create_model
    from supkd.models.zoo import ZOO_CLASSES, zoo_names

    rows = []
    x = torch.zeros(2, 3, 32, 32)
    for name in zoo_names():
        n = classes or ZOO_CLASSES[name]
        net = create_model(name, num_classes=n).eval()
        with torch.no_grad():
            stages = [k for k in net.forward_intermediates(x) if k not in ("embedding", "logits")]
        rows.append({"name": name, "params": sum(p.numel() for p in net.parameters()),
                     "classes": n, "embedding_dim": net.embedding_dim, "stages": stages})
    return rows


def run(args: argparse.Namespace) -> int:
    from supkd.errors import UserError
    from supkd.models import list_model_families, list_models
    from supkd.models.zoo import zoo_names

    if args.classes is not None and args.classes < 1:
        raise UserError(f"--classes: expected an integer >= 1, got {args.classes}")
    rows = _rows(args.classes)
    others = [n for n in list_models() if n not in set(zoo_names())]
    if args.json:
        print(json.dumps({"zoo": rows, "other_models": others,
                          "families": list_model_families()}, indent=2))
        return 0
    print(f"{'model':<13} {'parameters':>12} {'classes':>7} {'embedding':>9}  stages")
    for r in rows:
        print(f"{r['name']:<13} {r['params']:>12,} {r['classes']:>7} {r['embedding_dim']:>9}  "
              f"{', '.join(r['stages'])}")
    print(f"other models: {', '.join(others)}")
    print(f"families: {', '.join(list_model_families())}")
    return 0
