"""supkd's distill beside torchdistill's own training code: same models, data, batch, one run.

Every other ratio in benchmarks/RESULTS.md is against a loop written here. This one runs the
peer a user would otherwise pick, torchdistill (``pip install torchdistill``, the ``bench``
extra), through its own documented entry points:

- its YAML configuration, loaded by ``torchdistill.common.yaml_util.load_yaml_file`` (the
  ``!import_call`` / ``!import_get`` constructors build the data set, its torchvision
  transform pipeline and the sampler, exactly as in torchdistill's official CIFAR-10 configs);
- ``torchdistill.core.distillation.get_distillation_box`` (a ``DistillationBox``: its data
  loader builder and ``BaseDatasetWrapper``, forward hooks, ``WeightedSumLoss`` + ``KDLoss``,
  its optimizer registry), driven by the loop of torchdistill's
  ``examples/torchvision/image_classification.py`` (``pre_epoch_process``,
  ``forward_process``, ``post_forward_process``, ``MetricLogger`` with ``loss.item()``);

and supkd through its public API only (``supkd.models.create_model``,
``supkd.train.distill``, ``supkd.losses.build_loss``).

Equal computations:
- one ResNet-50 teacher and one ResNet-18 student (CIFAR stem) built once with
  ``create_model``; each tool trains its own deep copy of the same initial weights;
- the same images (the cifar10-jpeg pack, or generated ones with ``--synthetic``) in one data
  set object (a ``torchvision.datasets.CIFAR10`` look-alike built by torchdistill's YAML),
  the same torchvision transforms (RandomCrop(32, 4), flip, ToTensor, Normalize) in DataLoader
  workers, ``RandomSampler``, batch size, workers and pin_memory for both tools;
- SGD (lr, momentum 0.9, weight decay 5e-4, constant learning rate), Hinton KD with T = 4,
  ``loss = 1·CE + 1·T²·KL(batchmean)``: torchdistill's ``KDLoss`` with alpha = 1, beta = 1
  (it computes ``alpha·CE + beta·T²·KL``), supkd's ``hinton_kl`` with alpha = 1,
  ce_weight = 1;
- the teacher in eval mode for both (supkd always does this; torchdistill leaves the
  teacher's mode to the caller, and its example script never calls ``eval()`` on it, so the
  teacher copy is put in eval mode before it is handed over).

Rows: torchdistill; supkd with its engine defaults for the device (CPU: fp32 eager; CUDA:
bf16 autocast + channels_last + fused SGD); on CPU also supkd with
``train_options={"channels_last": "on"}`` (NHWC convolutions; not run below width 8, see
``channels_last_safe``), on CUDA supkd with amp and channels_last off (the equal-precision
row); with ``--bound`` supkd over batches already transformed and held in memory.

Cross-check (before any timing; CPU, float32, no random augmentation): on one identical batch
with identical weights, torchdistill's KD term (``KDLoss`` with alpha = 0, i.e. KL batchmean,
weighted T² in its ``WeightedSumLoss``) against supkd's ``build_loss("hinton_kl")``, and
torchdistill's first training-step loss against the one supkd's ``distill`` reports
(``metrics.jsonl`` of its run directory) must agree to 1e-5; after that first optimizer step
both students' parameters and BatchNorm buffers must agree to 1e-6 (the channels_last step,
other convolution kernels, to 1% of the step's largest change). The script exits 1 when the
cross-check fails, 2 (with a one-line install hint) when torchdistill is missing.

Timing: rounds interleaved (the order rotates every round), each round a fresh run of each
row (supkd: one ``distill`` call; torchdistill: a new box, one epoch, then
``clean_modules``) over ``--warmup + --steps`` batches; the warm-up batches (worker start,
first allocations) are excluded; the best and the median round are reported, and the
process's CPU time per step (steadier than wall time on a shared machine). Peak memory: on
CUDA ``torch.cuda.max_memory_allocated`` during a round less the allocation at its start; on
CPU the main process's peak RSS during a round (``VmHWM`` of /proc/self/status, reset through
/proc/self/clear_refs) less its RSS at the start (DataLoader workers are separate processes
and not counted); the median round is reported.

    python benchmarks/peer_torchdistill.py --device cpu --quick
    python benchmarks/peer_torchdistill.py --device cpu --quick --synthetic
    python benchmarks/peer_torchdistill.py --device cuda --data .data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    decode_npz,
    environment,
    find_cifar10_jpeg,
    fmt_rate,
    markdown_table,
    sync,
    write_output,
)

INSTALL_HINT = (
    "torchdistill is not installed: pip install torchdistill  (or pip install -e '.[bench]')"
)
#: torchdistill's official CIFAR-10 configs (configs/official/cifar10/...): Normalize values
#: and training batch size.
TD_CIFAR_MEAN = (0.49139968, 0.48215841, 0.44653091)
TD_CIFAR_STD = (0.24703223, 0.24348513, 0.26158784)
TD_CIFAR_BATCH = 64
KD_TOL = 1e-5
WEIGHT_ATOL = 1e-6
#: channels_last variant of the cross-check: parameters within this fraction of the step.
VARIANT_RTOL = 1e-2


# ---------------------------------------------------------------------------------------------
# data: one CIFAR-10 data set object for both tools


#: In-memory images the data set reads, by name: (uint8 (N, 32, 32, 3), labels). Filled by
#: ``register_images`` before torchdistill's YAML builds the data sets.
SOURCES: dict[str, tuple[np.ndarray, list[int]]] = {}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class CIFARPack(torch.utils.data.Dataset):
    """``torchvision.datasets.CIFAR10`` over in-memory images: ``data`` (N, 32, 32, 3) uint8,
    ``targets``, ``classes``, and ``__getitem__`` -> (transform(PIL image), label).

    torchvision's CIFAR10 reads only the python pickle release (md5-checked); this class is
    what torchdistill's YAML ``!import_call`` builds instead, with the same behaviour.
    """

    def __init__(self, source: str, transform=None, target_transform=None) -> None:
        self.data, self.targets = SOURCES[source]
        self.classes = CLASSES
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        img, target = Image.fromarray(self.data[i]), self.targets[i]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


def register_images(images: torch.Tensor, labels: torch.Tensor, check_batch: int) -> None:
    """uint8 (N, 3, H, W) images and (N,) labels -> ``SOURCES``: all of them for training
    ("train"), the first ``check_batch`` for the cross-check ("check")."""
    data, targets = images.permute(0, 2, 3, 1).contiguous().numpy(), labels.tolist()
    SOURCES["train"] = (data, targets)
    SOURCES["check"] = (data[:check_batch], targets[:check_batch])


def load_images(
    n: int, data: str | None, synthetic: bool, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n`` training images (uint8 NCHW) and labels, and where they come from."""
    if not synthetic:
        pack = find_cifar10_jpeg(data)
        if pack is not None:
            images, labels = decode_npz(pack / "train.npz", limit=n)
            return images, labels, f"cifar10-jpeg ({pack}), {len(labels)} training images"
        if data:
            raise SystemExit(f"--data {data}: no cifar10-jpeg pack (train.npz) there")
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    why = "--synthetic" if synthetic else "no cifar10-jpeg pack found"
    return images, labels, f"synthetic uint8 images ({why}), {n}"


# ---------------------------------------------------------------------------------------------
# torchdistill's configuration (its YAML, loaded by its own loader)

TRANSFORM_YAML = """!import_call
          key: 'torchvision.transforms.Compose'
          init:
            kwargs:
              transforms:{augment}
                - !import_call
                  key: 'torchvision.transforms.ToTensor'
                  init:
                - !import_call
                  key: 'torchvision.transforms.Normalize'
                  init:
                    kwargs:
                      mean: {mean}
                      std: {std}"""

AUGMENT_YAML = """
                - !import_call
                  key: 'torchvision.transforms.RandomCrop'
                  init:
                    kwargs:
                      size: 32
                      padding: 4
                - !import_call
                  key: 'torchvision.transforms.RandomHorizontalFlip'
                  init:
                    kwargs:
                      p: 0.5"""

#: The datasets section and one training stage, in the layout of torchdistill's official
#: CIFAR-10 KD configs. Models are handed to get_distillation_box as modules (supkd's, with
#: their weights), so the models section is absent; supkd models return a ModelOutput, so
#: KDLoss reads the logits from a forward hook on the classifier (torchdistill's documented
#: way to use an inner module's output).
CONFIG_YAML = """datasets:
  &train_id cifar10/train: !import_call
    key: '{dataset_key}'
    init:
      kwargs:
        source: 'train'
        transform: {train_transform}
  &check_id cifar10/check: !import_call
    key: '{dataset_key}'
    init:
      kwargs:
        source: 'check'
        transform: {check_transform}

train:
  log_freq: 1000000
  num_epochs: 1
  train_data_loader:
    dataset_id: *{loader_id}
    sampler:
      class_or_func: !import_get
        key: '{sampler}'
      kwargs:
    kwargs:
      batch_size: {batch}
      num_workers: {workers}
      pin_memory: {pin_memory}
      drop_last: False
  teacher:
    forward_proc: 'forward_batch_only'
    forward_hook:
      input: []
      output: ['classifier']
    sequential: []
    wrapper: 'DataParallel'
    requires_grad: False
    frozen_modules: []
  student:
    forward_proc: 'forward_batch_only'
    forward_hook:
      input: []
      output: ['classifier']
    adaptations:
    sequential: []
    wrapper: 'DistributedDataParallel'
    requires_grad: True
    frozen_modules: []
  optimizer:
    key: 'SGD'
    kwargs:
      lr: {lr}
      momentum: {momentum}
      weight_decay: {weight_decay}
  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
        kd:
          criterion:
            key: 'KDLoss'
            kwargs:
              student_module_path: 'classifier'
              student_module_io: 'output'
              teacher_module_path: 'classifier'
              teacher_module_io: 'output'
              temperature: {temperature}
              alpha: {kd_alpha}
              beta: {kd_beta}
              reduction: 'batchmean'
          weight: {kd_weight}
"""


@dataclass
class Recipe:
    batch: int
    workers: int
    pin_memory: bool
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0


def torchdistill_config(recipe: Recipe, *, check: bool = False, kd_only: bool = False) -> dict:
    """torchdistill's configuration, through its YAML loader.

    ``check``: the training loader reads the cross-check data set (no random augmentation,
    SequentialSampler, no workers). ``kd_only``: the criterion is the KD term alone,
    ``T²·KL(batchmean)`` (KDLoss with alpha = 0 returns KL batchmean; its weight is T²);
    otherwise ``1·(1·CE + 1·T²·KL)`` (KDLoss alpha = 1, beta = 1).
    """
    from torchdistill.common import yaml_util

    t = recipe.temperature
    text = CONFIG_YAML.format(
        dataset_key=f"{CIFARPack.__module__}.CIFARPack",
        train_transform=TRANSFORM_YAML.format(
            augment=AUGMENT_YAML, mean=list(TD_CIFAR_MEAN), std=list(TD_CIFAR_STD)
        ),
        check_transform=TRANSFORM_YAML.format(
            augment="", mean=list(TD_CIFAR_MEAN), std=list(TD_CIFAR_STD)
        ),
        loader_id="check_id" if check else "train_id",
        sampler="torch.utils.data.SequentialSampler" if check else "torch.utils.data.RandomSampler",
        batch=recipe.batch,
        workers=0 if check else recipe.workers,
        pin_memory=str(recipe.pin_memory and not check),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        temperature=t,
        kd_alpha=0.0 if kd_only else 1.0,
        kd_beta=1.0,
        kd_weight=t * t if kd_only else 1.0,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        return yaml_util.load_yaml_file(f.name)
    finally:
        os.unlink(f.name)


def torchdistill_box(teacher: nn.Module, student: nn.Module, config: dict, device: torch.device):
    from torchdistill.core.distillation import get_distillation_box

    device_ids = [device.index or 0] if device.type == "cuda" else None
    return get_distillation_box(
        teacher, student, config["datasets"], config["train"], device, device_ids, False, 1
    )


# ---------------------------------------------------------------------------------------------
# the two tools' training runs


def torchdistill_run(
    teacher: nn.Module,
    student: nn.Module,
    config: dict,
    device: torch.device,
    *,
    n_batches: int,
    warmup: int = 0,
) -> tuple[tuple[float, float] | None, list[float]]:
    """One torchdistill run of ``n_batches`` steps, the loop of torchdistill's
    examples/torchvision/image_classification.py (train_one_epoch).

    -> ((wall, process CPU) seconds of the batches after ``warmup``, or None when
    warmup = 0; the step losses).
    """
    from torchdistill.misc.log import MetricLogger, SmoothedValue

    box = torchdistill_box(teacher, student, config, device)
    losses: list[float] = []
    t0: tuple[float, float] | None = None
    try:
        box.pre_epoch_process(epoch=0)
        metric_logger = MetricLogger(delimiter="  ")
        metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value}"))
        metric_logger.add_meter("img/s", SmoothedValue(window_size=10, fmt="{value}"))
        log_freq = config["train"]["log_freq"]
        for i, (sample_batch, targets, supp_dict) in enumerate(
            metric_logger.log_every(box.train_data_loader, log_freq, "Epoch: [0]")
        ):
            if i == warmup and warmup > 0:
                sync(device)
                t0 = _clock()
            start_time = time.time()
            sample_batch, targets = sample_batch.to(device), targets.to(device)
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
            batch_size = sample_batch.shape[0]
            losses.append(loss.item())
            metric_logger.update(loss=losses[-1], lr=box.optimizer.param_groups[0]["lr"])
            metric_logger.meters["img/s"].update(batch_size / (time.time() - start_time))
            if i + 1 == n_batches:
                break
        sync(device)
        elapsed = _since(t0)
        box.post_epoch_process()
    finally:
        box.clean_modules()
    return elapsed, losses


def _clock() -> tuple[float, float]:
    """(wall, CPU time of this process: all its threads, user + system) in seconds."""
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float] | None) -> tuple[float, float] | None:
    if t0 is None:
        return None
    wall, cpu = _clock()
    return wall - t0[0], cpu - t0[1]


class TimedLoader:
    """A loader of ``n`` batches of ``loader`` that notes when batch ``warmup`` is requested
    (after a device sync): the start of the timed steps of a supkd run."""

    def __init__(self, loader, n: int, warmup: int, device: torch.device) -> None:
        self.loader, self.n, self.warmup, self.device = loader, n, warmup, device
        self.t0: tuple[float, float] | None = None

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator:
        for i, batch in enumerate(self.loader):
            if i == self.warmup and self.warmup > 0:
                sync(self.device)
                self.t0 = _clock()
            yield batch
            if i + 1 == self.n:
                return


def supkd_run(
    teacher: nn.Module,
    student: nn.Module,
    loader,
    recipe: Recipe,
    device: torch.device,
    *,
    n_batches: int,
    warmup: int = 0,
    out: str | None = None,
    train_options: dict | None = None,
) -> tuple[float, float] | None:
    """One ``supkd.train.distill`` run of ``n_batches`` steps over ``loader``.

    -> (wall, process CPU) seconds from the request of batch ``warmup`` to distill's return
    (the timed steps and the end-of-epoch bookkeeping), or None when warmup = 0.
    """
    from supkd.train import distill

    timed = TimedLoader(loader, n_batches, warmup, device)
    result = distill(
        student,
        teacher,
        timed,
        loss="hinton_kl",
        loss_args={"temperature": recipe.temperature},
        alpha=1.0,
        ce_weight=1.0,
        epochs=1,
        lr=recipe.lr,
        optimizer="sgd",
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
        schedule="constant",
        device=device,
        out=out,
        quiet=True,
        train_options=train_options,
    )
    sync(device)
    if result["status"] != "completed" or result["steps"] != n_batches:
        raise RuntimeError(f"supkd distill: {result}")
    return _since(timed.t0)


def supkd_loader(dataset, recipe: Recipe):
    """The DataLoader torchdistill's config builds (sampler, batch, workers, pin_memory), over
    the same data set object, without torchdistill's BaseDatasetWrapper."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=recipe.batch,
        sampler=torch.utils.data.RandomSampler(dataset),
        num_workers=recipe.workers,
        pin_memory=recipe.pin_memory,
        drop_last=False,
    )


# ---------------------------------------------------------------------------------------------
# cross-check


@dataclass
class Check:
    """A number both tools compute; ``torchdistill`` and ``supkd`` are the two values (for a
    weight comparison, the max abs difference is in ``supkd`` and ``torchdistill`` is 0)."""

    name: str
    torchdistill: float
    supkd: float
    tol: float
    note: str = ""
    values: bool = True  # False: a max-abs-difference row (no values to show)

    @property
    def diff(self) -> float:
        return abs(self.torchdistill - self.supkd)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.diff) and self.diff <= self.tol)

    def row(self) -> list[str]:
        shown = [f"{self.torchdistill:.8f}", f"{self.supkd:.8f}"] if self.values else ["-", "-"]
        return [
            self.name,
            *shown,
            f"{self.diff:.2e}",
            f"{self.tol:.2g}",
            "yes" if self.ok else "NO",
            self.note,
        ]


@dataclass
class CrossCheck:
    checks: list[Check] = field(default_factory=list)
    step_size: float = float("nan")  # largest parameter change of torchdistill's first step
    batch: int = 0

    @property
    def moved(self) -> bool:
        """The first step changed the weights far beyond the tolerance (a real check)."""
        return self.step_size > 100 * WEIGHT_ATOL

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks) and self.moved

    def get(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def rows(self) -> list[list[str]]:
        return [c.row() for c in self.checks]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys) -> float:
    return max(
        (float((a[k].double() - b[k].double()).abs().max()) for k in keys if a[k].numel()),
        default=0.0,
    )


def channels_last_safe(model: nn.Module) -> bool:
    """Whether ``model`` trains in channels_last on this CPU without crashing.

    torch 2.14.1 (oneDNN 3.12, CPU) corrupts the heap in the backward of a 1×1 stride-2
    convolution with fewer than 8 input channels in channels_last (a ResNet's downsample at
    width < 8): ``nn.Conv2d(4, 8, 1, stride=2)`` on an NHWC input that needs a gradient
    aborts the process within a few hundred steps ("corrupted size vs. prev_size",
    segmentation fault). 8 channels and more ran 300 steps cleanly.
    """
    return all(
        m.in_channels >= 8
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
    )


#: supkd's engine options of the cross-check's steps: the default CPU path (fp32, contiguous,
#: eager), and channels_last (the variant row of the CPU timing).
CHECK_VARIANTS = {
    "": {"amp": "off", "channels_last": "off", "compile": "off"},
    "channels_last": {"amp": "off", "channels_last": "on", "compile": "off"},
}


def _copies(teacher0: nn.Module, student0: nn.Module) -> tuple[nn.Module, nn.Module]:
    cpu = torch.device("cpu")
    return copy.deepcopy(teacher0).to(cpu).eval(), copy.deepcopy(student0).to(cpu).train()


def _torchdistill_kd_term(teacher0, student0, cfg_kd: dict, x, y) -> float:
    """torchdistill: the KD term alone (its KDLoss: KL batchmean, weight T²), no step."""
    teacher, student = _copies(teacher0, student0)
    box = torchdistill_box(teacher, student, cfg_kd, torch.device("cpu"))
    try:
        box.pre_epoch_process(epoch=0)
        xb, yb, supp = next(iter(box.train_data_loader))
        if not (torch.equal(xb, x) and torch.equal(yb, y)):
            raise RuntimeError("cross-check: torchdistill's loader gave another batch")
        with torch.no_grad():
            return float(box.forward_process(xb, yb, supp))
    finally:
        box.clean_modules()


def _supkd_step_checks(
    teacher0, student0, recipe: Recipe, variant: str, batch, td: dict, result: CrossCheck
) -> list[Check]:
    """supkd: one training step through distill() in engine ``variant``, compared with
    torchdistill's (``td``: its KD term, first step loss, state after the step, the student's
    parameter and buffer names); its run directory reports the step's loss."""
    x, y = batch
    teacher, sk_student = _copies(teacher0, student0)
    with tempfile.TemporaryDirectory() as run_dir:
        supkd_run(teacher, sk_student, [(x, y)], recipe, torch.device("cpu"), n_batches=1,
                  out=run_dir, train_options=CHECK_VARIANTS[variant])
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
        record = json.loads(lines[-1])
    s_sk = sk_student.state_dict()
    tag = f" (supkd {variant})" if variant else ""
    # The default path runs the very kernels torchdistill runs: equal to fp32 rounding.
    # channels_last runs other (NHWC) convolution kernels, whose fp32 rounding differs;
    # BatchNorm's batch statistics on a small batch amplify it (at width 8, both fp32
    # gradients differ from float64 ones by ~1e-3): a tolerance relative to the step.
    w_tol = WEIGHT_ATOL if not variant else max(WEIGHT_ATOL, VARIANT_RTOL * result.step_size)
    w_note = "" if not variant else f" (tolerance {VARIANT_RTOL:g} of it: other kernels)"
    return [
        Check(f"KD term in the training step{tag}", td["kd"], float(record["train_kd"]),
              KD_TOL, "supkd: distill's reported train_kd"),
        Check(f"first step loss CE + T²·KL{tag}", td["loss"], float(record["train_loss"]),
              KD_TOL, "torchdistill KDLoss(alpha=1, beta=1) vs supkd distill's train_loss"
              + ("" if variant else f"; CE {td['sk_ce']:.6f}")),
        Check(f"student parameters after that SGD step{tag}", 0.0,
              _max_diff(td["state"], s_sk, td["params"]), w_tol,
              f"max abs diff; largest change in the step: {result.step_size:.2e}{w_note}",
              values=False),
        Check(f"student BatchNorm buffers after that step{tag}", 0.0,
              _max_diff(td["state"], s_sk, td["buffers"]), w_tol,
              "max abs diff of running mean/var, batches tracked", values=False),
    ]


def cross_check(
    teacher0: nn.Module, student0: nn.Module, recipe: Recipe, variants=("", "channels_last")
) -> CrossCheck:
    """The KD loss values and the first optimizer step of both tools on one batch (CPU).

    ``SOURCES["check"]`` holds the batch's images; the batch is the first ``recipe.batch`` of
    them with ToTensor + Normalize only (no random augmentation), read by torchdistill's data
    loader (SequentialSampler) and given to supkd as the same tensors. ``variants``: the
    supkd engine options (``CHECK_VARIANTS``) whose first step is compared with
    torchdistill's.
    """
    from supkd.losses import build_loss

    cpu = torch.device("cpu")
    cfg_train = torchdistill_config(recipe, check=True)
    cfg_kd = torchdistill_config(recipe, check=True, kd_only=True)
    check_set = cfg_train["datasets"]["cifar10/check"]
    x = torch.stack([check_set[i][0] for i in range(recipe.batch)])
    y = torch.tensor([check_set[i][1] for i in range(recipe.batch)])

    result = CrossCheck(batch=recipe.batch)
    s_init = {k: v.detach().clone() for k, v in student0.state_dict().items()}
    names = dict(student0.named_parameters())
    td = {"params": [k for k in s_init if k in names],
          "buffers": [k for k in s_init if k not in names]}
    td["kd"] = _torchdistill_kd_term(teacher0, student0, cfg_kd, x, y)

    # supkd's loss on the same logits (student in train mode, as in a training step).
    teacher, student = _copies(teacher0, student0)
    with torch.no_grad():
        s_logits, t_logits = student(x).logits, teacher(x).logits
    sk_kd = float(build_loss("hinton_kl", temperature=recipe.temperature)(s_logits, t_logits))
    td["sk_ce"] = float(F.cross_entropy(s_logits, y))
    result.checks.append(Check("KD term T²·KL(batchmean), T=4", td["kd"], sk_kd, KD_TOL,
                               "torchdistill KDLoss(alpha=0)·T² vs supkd build_loss('hinton_kl')"))

    # torchdistill: one training step (CE + T²·KL).
    teacher, td_student = _copies(teacher0, student0)
    _, td_losses = torchdistill_run(teacher, td_student, cfg_train, cpu, n_batches=1)
    td["loss"], td["state"] = td_losses[0], td_student.state_dict()
    result.step_size = _max_diff(td["state"], s_init, td["params"])
    for variant in variants:
        result.checks += _supkd_step_checks(teacher0, student0, recipe, variant, (x, y), td,
                                            result)
    return result


# ---------------------------------------------------------------------------------------------
# memory


class PeakMemory:
    """Peak memory of one round above its start: CUDA allocator, or the main process's RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_reset = device.type != "cuda" and _clear_refs_works()

    @property
    def how(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated during a round less the allocation at its start"
        if self.cpu_reset:
            return (
                "main process peak RSS during a round (VmHWM, reset via /proc/self/clear_refs) "
                "less its RSS at the start; DataLoader workers not counted"
            )
        return "not measured (no /proc/self/clear_refs)"

    def start(self) -> float:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return float(torch.cuda.memory_allocated(self.device))
        if self.cpu_reset:
            Path("/proc/self/clear_refs").write_text("5")
            return float(_proc_status("VmRSS"))
        return float("nan")

    def stop(self, base: float) -> float:
        if self.device.type == "cuda":
            sync(self.device)
            return float(torch.cuda.max_memory_allocated(self.device)) - base
        if self.cpu_reset:
            return float(_proc_status("VmHWM")) - base
        return float("nan")


def _proc_status(key: str) -> int:
    """A /proc/self/status field in bytes."""
    text = Path("/proc/self/status").read_text()
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else 0


def _clear_refs_works() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status("VmHWM") > 0
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# main


@dataclass
class Row:
    tool: str
    how: str
    times: list[float] = field(default_factory=list)  # seconds per timed window, per round
    cpu: list[float] = field(default_factory=list)  # process CPU seconds in that window
    peaks: list[float] = field(default_factory=list)
    note: str = ""


def _versions() -> str:
    import torchdistill

    return f"torchdistill {torchdistill.__version__}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--batch", type=int, default=TD_CIFAR_BATCH,
                   help=f"training batch of both tools (default {TD_CIFAR_BATCH}, torchdistill's "
                   "official CIFAR-10 configs)")
    p.add_argument("--width", type=int, default=64, help="ResNet width (64 = standard)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps at a round's start")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per tool")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers of both tools (default: CUDA min(16, cores) as "
                   "torchdistill's configs, CPU min(2, cores))")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU: torch threads (default: all cores)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--check-batch", type=int, default=16, help="batch of the cross-check")
    p.add_argument("--no-check", action="store_true", help="skip the cross-check")
    p.add_argument("--bound", action="store_true",
                   help="add a supkd row over batches already transformed and held in memory "
                   "(no data loading: how much the DataLoader workers cost the step on this "
                   "machine)")
    p.add_argument("--check-only", action="store_true", help="run the cross-check only")
    p.add_argument("--data", default=None, help="cifar10-jpeg folder (default: auto-detect)")
    p.add_argument("--synthetic", action="store_true", help="generated images, not the pack")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: width 16, 6 timed steps")
    p.add_argument("--out", default=None, help="also write the Markdown report here")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible")
    if args.warmup is not None and args.warmup < 1:
        p.error("--warmup must be >= 1 (the first batch starts the workers)")
    if args.quick:
        args.width = min(args.width, 16)
    return args


@dataclass
class Plan:
    """The timing's settings, resolved from the command line and the device's defaults."""

    device: torch.device
    recipe: Recipe
    steps: int
    warmup: int
    rounds: int
    bound: bool

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def n_batches(self) -> int:
        return self.warmup + self.steps


def resolve(args: argparse.Namespace) -> Plan:
    """The plan; also sets the process's threads (CPU) or cuDNN/TF32 flags (CUDA)."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    cpus = os.cpu_count() or 1
    workers = (
        args.workers if args.workers is not None else (min(16, cpus) if cuda else min(2, cpus))
    )
    if not cuda:
        torch.set_num_threads(args.threads or cpus)
    else:
        # torchdistill's example sets cudnn.benchmark; supkd's engine also turns TF32 on,
        # process-wide, on its first call: set both before any run so both tools get them.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Plan(
        device=device,
        recipe=Recipe(batch=args.batch, workers=workers, pin_memory=cuda, lr=args.lr),
        steps=args.steps or (6 if args.quick else 20 if cuda else 10),
        warmup=args.warmup if args.warmup is not None else (2 if args.quick else 5 if cuda else 2),
        rounds=args.rounds or (3 if cuda else 5),
        bound=args.bound,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torchdistill  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    plan = resolve(args)
    recipe = plan.recipe
    images, labels, data_src = load_images(plan.n_batches * args.batch, args.data, args.synthetic)
    register_images(images, labels, args.check_batch)

    from supkd.models import create_model

    torch.manual_seed(0)
    teacher0 = create_model("resnet50", width=args.width).eval()
    student0 = create_model("resnet18", width=args.width)

    parts = [
        "## supkd vs torchdistill, same models, data and batch (benchmarks/peer_torchdistill.py)",
        "",
        environment(plan.device).replace("\n- date:", f", {_versions()}\n- date:", 1),
        f"- data: {data_src}; ResNet-50 -> ResNet-18 (supkd create_model, CIFAR stem, width "
        f"{args.width}); both tools: torchvision RandomCrop(32, 4) + flip + ToTensor + "
        f"Normalize in {recipe.workers} DataLoader workers, RandomSampler, batch {args.batch}, "
        f"SGD lr {recipe.lr} momentum {recipe.momentum} wd {recipe.weight_decay} constant, "
        f"loss CE + T²·KL (T = {recipe.temperature:g})",
    ]
    check: CrossCheck | None = None
    if not args.no_check:
        check_recipe = Recipe(batch=min(args.check_batch, len(SOURCES["check"][1])), workers=0,
                              pin_memory=False, lr=recipe.lr)
        variants = ("", "channels_last") if channels_last_safe(student0) else ("",)
        check = cross_check(teacher0, student0, check_recipe, variants)
        print(f"cross-check: {'passed' if check.ok else 'FAILED'}", flush=True)
    table = "" if args.check_only else timing(plan, teacher0, student0, parts)
    if check is not None:
        parts += [
            "",
            f"Cross-check (CPU, float32, one batch of {check.batch} images with ToTensor + "
            "Normalize only, identical initial weights, teacher eval, student train mode): "
            f"**{'passed' if check.ok else 'FAILED'}**",
            "",
            markdown_table(
                ["check", "torchdistill", "supkd", "abs diff", "tolerance", "pass", "note"],
                check.rows(),
            ),
        ]
    if table:
        parts += ["", table]
    write_output("\n".join(parts), args.out)
    return 0 if check is None or check.ok else 1


# ---------------------------------------------------------------------------------------------
# timing


Run = tuple[Row, Callable[[], "tuple[float, float]"]]


def _supkd_row(tool: str, how: str, teacher0, student0, loader, plan: Plan,
               train_options: dict | None = None, *, copies: bool = True) -> Run:
    """A supkd row training its own copies of the initial weights (``copies``; on the
    device) over ``loader``."""
    if copies:
        teacher0 = copy.deepcopy(teacher0).to(plan.device)
        student0 = copy.deepcopy(student0).to(plan.device)
    return Row(tool, how), lambda: supkd_run(
        teacher0, student0, loader, plan.recipe, plan.device, n_batches=plan.n_batches,
        warmup=plan.warmup, train_options=train_options,
    )


def timing_runs(plan: Plan, teacher0, student0, parts: list[str]) -> list[Run]:
    """The rows, each with the function that makes one timed run of it: torchdistill, supkd,
    then supkd's variant for the device (and the ``--bound`` row)."""
    device = plan.device
    td_config = torchdistill_config(plan.recipe)
    loader = supkd_loader(td_config["datasets"]["cifar10/train"], plan.recipe)
    # Each tool trains its own copy of the same initial weights (torchdistill's forward hooks
    # and frozen flags then never touch supkd's modules, and the reverse).
    td_teacher = copy.deepcopy(teacher0).to(device).eval()
    td_student = copy.deepcopy(student0).to(device)
    sk_mode = "bf16 autocast + channels_last (engine defaults on CUDA)" if plan.cuda else "fp32"
    td_row = Row(
        "torchdistill",
        "DistillationBox from its YAML (get_distillation_box), WeightedSumLoss + KDLoss, the "
        "example's train_one_epoch loop (loss.item() per step), fp32",
    )
    sk_teacher = copy.deepcopy(teacher0).to(device)
    sk_student = copy.deepcopy(student0).to(device)
    sk = _supkd_row("supkd", f"supkd.train.distill over the same DataLoader, {sk_mode}",
                    sk_teacher, sk_student, loader, plan, copies=False)
    runs: list[Run] = [
        (td_row, lambda: torchdistill_run(td_teacher, td_student, td_config, device,
                                          n_batches=plan.n_batches, warmup=plan.warmup)[0]),
        sk,
    ]
    if plan.cuda:
        # The equal-precision comparison: supkd's engine without its CUDA defaults (bf16
        # autocast, channels_last), i.e. the fp32 contiguous step torchdistill runs.
        runs.append(_supkd_row(
            "supkd, fp32 contiguous", "supkd.train.distill over the same DataLoader, "
            "train_options={'amp': 'off', 'channels_last': 'off'}", teacher0, student0, loader,
            plan, {"amp": "off", "channels_last": "off"}))
    elif not channels_last_safe(student0):
        parts.append(
            "- supkd channels_last row: not run (this width has a 1×1 stride-2 convolution "
            "with < 8 input channels, whose channels_last backward crashes torch 2.14.1 on CPU)"
        )
    else:
        # The same step with channels_last tensors (train.channels_last=on; its "auto" turns
        # it on only on CUDA): oneDNN's NHWC convolutions. Own copies: supkd converts the
        # modules in place.
        runs.append(_supkd_row(
            "supkd, channels_last on", "supkd.train.distill over the same DataLoader, fp32, "
            "train_options={'channels_last': 'on'}", teacher0, student0, loader, plan,
            {"channels_last": "on"}))
    if plan.bound:
        # The same distill step with no data loading at all: what any data pipeline could
        # give at most on this machine (a bound, not a pipeline a user would run). It trains
        # the supkd row's networks further.
        batches = []
        for b in loader:
            batches.append((b[0], b[1]))
            if len(batches) == plan.n_batches:
                break
        runs.append(_supkd_row(
            "supkd, no data cost (bound)", f"supkd.train.distill over {plan.n_batches} batches "
            f"already transformed and held in memory, {sk_mode}", sk_teacher, sk_student,
            batches, plan, copies=False))
    return runs


def run_rounds(runs: list[Run], plan: Plan, mem: PeakMemory) -> None:
    """``plan.rounds`` interleaved rounds; each row's times, CPU times and peaks."""
    images = plan.steps * plan.recipe.batch
    for r in range(plan.rounds):
        # The order rotates every round, so that no tool always runs right after another.
        k = r % len(runs)
        for row, run in runs[k:] + runs[:k]:
            base = mem.start()
            elapsed, cpu_s = run()
            row.peaks.append(mem.stop(base))
            row.times.append(elapsed)
            row.cpu.append(cpu_s)
            print(
                f"  round {r + 1}/{plan.rounds} {row.tool}: {fmt_rate(images / elapsed)}"
                f" img/s, peak +{row.peaks[-1] / 2**20:,.0f} MiB",
                flush=True,
            )


def timing_table(runs: list[Run], plan: Plan) -> str:
    steps, batch = plan.steps, plan.recipe.batch

    def rates(row: Row) -> tuple[float, float]:
        per = [steps * batch / t for t in row.times]
        return max(per), statistics.median(per)

    def cpu_per_step(row: Row) -> float:
        return statistics.median(row.cpu) / steps

    td_best, td_med = rates(runs[0][0])
    td_cpu = cpu_per_step(runs[0][0])
    headers = ["tool", "pipeline", "batch", "images/s best", "images/s median",
               "× torchdistill (best)", "× torchdistill (median)", "process CPU s/step (median)",
               "× torchdistill (CPU time)", "peak memory MiB (median round)"]
    body = []
    for row, _ in runs:
        best, med = rates(row)
        peak = statistics.median(row.peaks) / 2**20 if row.peaks else float("nan")
        body.append([
            row.tool, row.how, batch, fmt_rate(best), fmt_rate(med), f"{best / td_best:.2f}",
            f"{med / td_med:.2f}", f"{cpu_per_step(row):.3f}",
            f"{td_cpu / cpu_per_step(row):.2f}", f"{peak:,.0f}" if peak == peak else "-",
        ])
    return markdown_table(headers, body)


def timing(plan: Plan, teacher0: nn.Module, student0: nn.Module, parts: list[str]) -> str:
    """Interleaved rounds of both tools; -> the Markdown table (and notes in ``parts``)."""
    mem = PeakMemory(plan.device)
    runs = timing_runs(plan, teacher0, student0, parts)
    run_rounds(runs, plan, mem)
    steps, batch, warmup = plan.steps, plan.recipe.batch, plan.warmup
    parts.append(
        f"- timing: {plan.rounds} interleaved rounds (the order rotates each round), each a "
        f"fresh run of each tool over {plan.n_batches} batches; the first {warmup} excluded, "
        f"{steps} timed; images/s = {steps}·{batch} / time of the timed steps; process CPU "
        "s/step = CPU time of this process (all its threads, user + system; not the "
        "DataLoader workers) in the timed steps / steps, which a shared machine's load "
        "changes far less than the wall time"
    )
    parts.append(
        f"- peak memory: {mem.how}; the median round (the process's first round also holds "
        "one-off allocations)"
    )
    parts.append(
        "- per round (img/s, peak MiB): "
        + "; ".join(
            f"{row.tool}: "
            + ", ".join(f"{steps * batch / t:.0f}/{m / 2**20:.0f}"
                        for t, m in zip(row.times, row.peaks))
            for row, _ in runs
        )
    )
    return timing_table(runs, plan)


if __name__ == "__main__":
    raise SystemExit(main())
