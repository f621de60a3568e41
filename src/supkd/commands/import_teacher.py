"""``supkd import-teacher``: turn a teacher trained elsewhere into a supkd run directory.

    supkd import-teacher ckpt_epoch_1000.pth --classifier last.pth --arch resnet50 \\
        --out runs/supcon_teacher
    supkd import-teacher resnet50-11ad3fa6.pth --format torchvision --out runs/tv_r50
    supkd import-teacher ckpt.pth --input-norm "0.5,0.5,0.5/0.5,0.5,0.5" --data cifar10 \\
        --num-classes 10 --out runs/own_teacher
    supkd import-teacher --timm convnext_atto --weights model.safetensors --data cifar10 \\
        --num-classes 10 --out runs/convnext_teacher

The run directory gets ``model.pt`` (the engine's format, what ``distill`` loads teachers
from), ``config.yaml`` (the model section; ``meta.imported`` records the source files and the
input normalization) and ``result.json`` with status ``imported``.

A teacher trained elsewhere normalized its inputs with its own statistics; ``--input-norm``
(default ``auto``: SupContrast's ``opt.dataset``, ImageNet for torchvision weights, none for a
supkd run) names them and ``--data`` the supkd data set it will be distilled on (default: the
one the statistics belong to). When they differ, the saved model corrects supkd's inputs
(``input_affine`` in its spec; :class:`supkd.models.InputAffine`), and a line says how.

The import is checked before anything is written: the saved model is reloaded through
:func:`supkd.models.files.load_model` and must give the same outputs as the imported one
on a random batch.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supkd.errors import CheckpointError, UserError

if TYPE_CHECKING:
    import torch

HELP = "import a teacher (SupContrast checkpoint, torchvision ResNet or timm weights, supkd run)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", default=None,
                        help="checkpoint file, or a supkd run directory (not with --timm)")
    parser.add_argument("--timm", metavar="NAME", default=None,
                        help="a timm architecture (e.g. convnext_atto, vit_tiny_patch16_224) "
                        "whose weights --weights holds")
    parser.add_argument("--weights", metavar="FILE", default=None,
                        help="with --timm: the .safetensors or .pth weights file")
    parser.add_argument("--timm-args", metavar="MAPPING", default=None,
                        help="with --timm: constructor arguments as a YAML mapping, e.g. "
                        "'{img_size: 32}'")
    parser.add_argument("--out", required=True, help="run directory to create")
    parser.add_argument(
        "--arch",
        default=None,
        help="expected architecture (resnet18|resnet34|resnet50); checked against the weights",
    )
    parser.add_argument(
        "--stem",
        choices=["cifar", "imagenet"],
        default=None,
        help="expected stem (default: read from the weights: 3x3 conv1 = cifar, 7x7 = imagenet)",
    )
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=["auto", "supcontrast", "torchvision", "run"],
        default="auto",
        help="source format (default: detected from the keys)",
    )
    parser.add_argument(
        "--classifier",
        default=None,
        help="SupContrast linear classifier file ({'model': {'fc.weight', 'fc.bias'}})",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="number of classes when the source has no classifier (logits are then zeros)",
    )
    parser.add_argument(
        "--input-norm",
        default="auto",
        metavar="auto|none|supcontrast-cifar10|supcontrast-cifar100|imagenet|M1,M2,M3/S1,S2,S3",
        help="per-channel mean/std the teacher was trained with (default auto: a SupContrast "
        "checkpoint's opt.dataset, imagenet for torchvision weights, none for a supkd run); "
        "none: no correction",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="NAME",
        help="supkd data set the teacher will be distilled on (cifar10, cifar100, "
        "cifar10-jpeg, imagefolder); default: the one the --input-norm statistics belong to. "
        "Its normalization is converted into the teacher's",
    )
    parser.add_argument("--name", default=None, help="run name (default: the --out folder name)")
    parser.add_argument(
        "--force", action="store_true", help="replace the model of an existing run directory"
    )


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, spec: dict[str, Any]) -> bool:
    import torch  # here, not at the top: `supkd --help` imports this module, not torch

    size = 32 if spec.get("stem") == "cifar" else 64
    fixed = getattr(a, "input_size", None)  # a ViT takes its img_size only
    shape = fixed or (int(spec.get("in_channels", 3)), size, size)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *shape, generator=gen)
    a.eval()
    b.eval()
    with torch.no_grad():
        oa, ob = a(x), b(x)
    pairs = [(oa.logits, ob.logits), (oa.embedding, ob.embedding)]
    if oa.projection is not None or ob.projection is not None:
        if oa.projection is None or ob.projection is None:
            return False
        pairs.append((oa.projection, ob.projection))
    return all(torch.equal(p, q) for p, q in pairs)


#: Fields of the ``model:`` section an imported model's spec can fill.
MODEL_FIELDS = ("name", "stem", "width", "projection_dim", "timm_args")


def _timm_args(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise UserError(f"--timm-args: expected a YAML mapping such as '{{img_size: 32}}', "
                        f"got {text!r}")
    return value


def _import(args: argparse.Namespace) -> Any:
    """The :class:`ImportedTeacher` the flags ask for (``--timm`` or a source)."""
    from supkd.importers import import_teacher, import_timm

    if args.timm is None:
        if args.source is None:
            raise UserError("import-teacher: give a checkpoint or run directory, or "
                            "--timm NAME --weights FILE")
        if args.weights is not None or args.timm_args is not None:
            raise UserError("--weights/--timm-args: only used with --timm NAME")
        return import_teacher(
            args.source,
            arch=args.arch,
            stem=args.stem,
            fmt=args.fmt,
            classifier=args.classifier,
            num_classes=args.num_classes,
            input_norm=args.input_norm,
            data=args.data,
        )
    if args.weights is None:
        raise UserError("--timm: give the weights file with --weights FILE")
    if args.source is not None:
        raise UserError(f"--timm: the weights come from --weights, not {args.source!r}")
    for flag, value in (("--arch", args.arch), ("--stem", args.stem),
                        ("--classifier", args.classifier)):
        if value is not None:
            raise UserError(f"{flag}: not used with --timm")
    return import_timm(args.timm, args.weights, num_classes=args.num_classes,
                       timm_args=_timm_args(args.timm_args), input_norm=args.input_norm,
                       data=args.data)


def run(args: argparse.Namespace) -> int:
    import torch

    from supkd.models.files import load_model, save_model
    from supkd.train import load_run_config as load_config
    from supkd.train.run_dir import RunDir, RunResult
    from supkd.vocab import RunStatus

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    RunDir(out).claim()  # a folder of the user's own files is never taken over
    if (out / "model.pt").exists() and not args.force:
        raise UserError(f"--out {out}: already holds model.pt; pass --force to replace it")
    t0 = time.time()
    imp = _import(args)
    net = imp.model
    spec = dict(net.spec)
    name = args.name or out.resolve().name
    imported = {
        "format": imp.format,
        "sources": [str(Path(s).resolve()) for s in imp.sources],
        "has_classifier": imp.has_classifier,
        "has_projection_head": imp.has_head,
        "notes": imp.notes,
        "input_norm": imp.input_norm,
        "data": imp.data,
        "input_affine": imp.input_affine,
    }
    cfg = load_config(
        {
            "name": name,
            # The model fields the spec has (ResNets: stem, width; timm: timm_args).
            "model": {k: spec[k] for k in MODEL_FIELDS if k in spec},
            # The data set the correction was made for (when known), so that the run's
            # config.yaml does not name the default data set.
            **({"data": {"name": imp.data}} if imp.data else {}),
            "meta": {"imported": imported},
        }
    )

    # Save into a scratch folder beside --out first and reload it through the engine: a
    # model that does not round-trip is never published into the run directory.
    try:
        out.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".import-", dir=out))
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    try:
        trained = ["encoder"] + ["head"] * imp.has_head + ["classifier"] * imp.has_classifier
        save_model(scratch / "model.pt", net, {"task": "import", "trained": trained, **imported})
        again = load_model(scratch / "model.pt")
        if not _same_outputs(net, again, spec):
            raise CheckpointError(
                f"{args.source}: the saved model does not reproduce the imported one"
            )
        try:
            rd = RunDir(out)
            rd.write_config(cfg.to_dict())  # first: what makes the folder a run (RunDir.claim)
            (scratch / "model.pt").replace(rd.model_path)
            rd.write_result(
                RunResult(
                    status=RunStatus.IMPORTED,
                    name=name,
                    task="import",
                    epochs=0,
                    steps=0,
                    wall_time_s=round(time.time() - t0, 3),
                    versions={"torch": torch.__version__},
                    device="cpu",
                    meta={"imported": imported},
                )
            )
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write ({exc.strerror})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stem = f"stem={spec['stem']}, " if "stem" in spec else ""
    print(
        f"imported {imp.format} {spec['name']} ({stem}"
        f"{spec['num_classes']} classes, head={'yes' if imp.has_head else 'no'}) -> {out}"
    )
    print(imp.input_note)
    for note in imp.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
