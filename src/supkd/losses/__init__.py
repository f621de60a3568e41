"""Losses of supkd: the registry of KD losses and the SupCon pre-training loss.

Usage::

    from supkd.losses import LOSSES, SupConLoss, build_loss

    kd = build_loss("supcon_kd", temperature=0.1, normalize_student=True)
    value = kd(z_s, z_t, labels)      # student (B, D_s), teacher (B, D_t), labels (B,)
    sup = SupConLoss(temperature=0.1)
    value = sup(features, labels)     # features (B, V, D), L2-normalized

One file per KD loss (``logit_mse.py`` ... ``hinton_kl.py``, then the baselines ``dkd.py``,
``dist.py``, ``sp.py``, ``rkd.py``, ``crd.py``, and the feature baselines ``fitnet.py``,
``at.py``, ``nst.py``, ``pkt.py``, ``kdsvd.py``, ``vid.py``, ``ofd.py``, ``reviewkd.py``,
``cc.py``, ``skd.py``), each class registered with
``@register_loss``; ``LOSSES`` is the read-only view of the registry (name -> class, in
registration order). ``SupConLoss`` (teacher pre-training) is not a KD loss and is not in it.

A loss of your own, in your own module (say ``my_losses.py``)::

    import torch
    from supkd.losses import KDLoss, register_loss

    @register_loss("l1_kd")
    class L1KD(KDLoss):
        label = "L1 KD"                    # row label in reports (default: the name)
        paper_eq = "mean_i ||z_t - z_s||_1"
        summary = "L1 distance of teacher and student vectors"

        def __init__(self, scale: float = 1.0) -> None:   # becomes task.loss_args
            super().__init__()
            self.scale = scale

        def compute(self, student, teacher, labels):       # (B, D) float32, (B, D), (B,)|None
            return self.scale * (teacher - student).abs().sum(dim=1).mean()

``build_loss("l1_kd", scale=2.0)`` works once the module is imported. On the command line,
``supkd --plugin my_losses train cfg.yaml task.name=distill task.loss=l1_kd`` imports it
before the command runs (a module name on ``sys.path`` or the current folder, or a path to
a ``.py`` file; repeatable); an installed package can instead declare an entry point in the
``supkd.plugins`` group, which every ``supkd`` command imports (see
:mod:`supkd.utils.plugins`). A name that is taken is refused with a ``ValueError`` naming
the class that holds it.
"""

from __future__ import annotations

# Import order is registration order (LOSSES lists the losses in it): the paper's Table II
# order, then classic KD, then the KD baselines beyond the paper (DKD, DIST, SP, RKD, CRD),
# then the feature-distillation baselines (FitNet ... SKD).
# isort would sort them by file name.
# isort: off
from supkd.losses.base import KDLoss, StageKDLoss
from supkd.losses.logit_mse import LogitMSELoss
from supkd.losses.norm_mse import NormMSELoss
from supkd.losses.cosine import CosineLoss
from supkd.losses.gram import GramLoss
from supkd.losses.supcon_kd import SupConKDLoss
from supkd.losses.hinton_kl import HintonKLLoss
from supkd.losses.dkd import DKDLoss
from supkd.losses.dist import DISTLoss
from supkd.losses.sp import SPLoss
from supkd.losses.rkd import RKDLoss
from supkd.losses.crd import CRDLoss
from supkd.losses.fitnet import FitNetLoss
from supkd.losses.at import ATLoss
from supkd.losses.nst import NSTLoss
from supkd.losses.pkt import PKTLoss
from supkd.losses.kdsvd import KDSVDLoss
from supkd.losses.vid import VIDLoss
from supkd.losses.ofd import OFDLoss
from supkd.losses.reviewkd import ReviewKDLoss
from supkd.losses.cc import CCLoss
from supkd.losses.skd import SKDLoss
# isort: on
from supkd.losses.registry import LOSSES, build_loss, loss_arguments, loss_label, register_loss
from supkd.losses.supcon import SupConLoss

__all__ = [
    "LOSSES",
    "ATLoss",
    "CCLoss",
    "CRDLoss",
    "CosineLoss",
    "DISTLoss",
    "DKDLoss",
    "FitNetLoss",
    "GramLoss",
    "HintonKLLoss",
    "KDLoss",
    "KDSVDLoss",
    "LogitMSELoss",
    "NSTLoss",
    "NormMSELoss",
    "OFDLoss",
    "PKTLoss",
    "RKDLoss",
    "ReviewKDLoss",
    "SKDLoss",
    "SPLoss",
    "StageKDLoss",
    "SupConKDLoss",
    "SupConLoss",
    "VIDLoss",
    "build_loss",
    "loss_arguments",
    "loss_label",
    "register_loss",
]
