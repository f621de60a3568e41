"""timm architectures (CNNs and ViTs) as supkd models: ``create_model("timm/<arch>", ...)``.

    net = create_model("timm/convnext_atto", num_classes=10, in_channels=3, projection_dim=128)
    vit = create_model("timm/vit_tiny_patch16_224", num_classes=10,
                       timm_args={"img_size": 32, "patch_size": 4})
    out = vit(x)                        # ModelOutput(logits (B, 10), embedding (B, F), None)
    feats = vit.forward_intermediates(x)  # {"blocks.0": (B, C, 8, 8), ..., "embedding", "logits"}

The network is timm's own (``timm.create_model``; Wightman, "PyTorch Image Models",
github.com/huggingface/pytorch-image-models), wrapped so that it has the interface of
:class:`supkd.models.SupKDResNet` that every task, the teacher cache and CKA use:

- ``encoder``: timm's network with its classifier removed (``reset_classifier(0)``):
  ``encoder(x)`` is timm's pooled pre-logits feature (``forward_head(forward_features(x),
  pre_logits=True)``), the ``embedding`` (B, F);
- ``head``: supkd's SupCon :class:`~supkd.models.heads.ProjectionHead` on that embedding
  (when ``projection_dim`` is set), as for the ResNets;
- ``classifier``: an ``nn.Linear(F, num_classes)`` on the embedding. It is timm's own
  classifier Linear, taken out of the network, when that one has the requested classes (so a
  loaded file's or the Hub's classifier is kept), else a fresh one. Why supkd's and not the
  classifier inside timm's network: the linear task re-initializes ``model.classifier`` and
  trains it on ``encoder(x)``, and the distill task reads ``logits`` and ``embedding`` from one
  forward; a separate Linear on the embedding makes both exact for every architecture.
  (Models whose classifier is not one Linear, e.g. distilled DeiTs, get a fresh Linear.)
- ``forward_intermediates(x)``: timm's own ``forward_intermediates`` (timm >= 1.0), named
  by ``feature_info`` (``act1, layer1..layer4`` for a timm ResNet, ``stages.0..3`` for a
  ConvNeXt, ``blocks.0..`` for a ViT), then ``embedding`` and ``logits``. ViT tokens come as
  (B, C, H/p, W/p) maps of the patch tokens (timm's ``output_fmt="NCHW"``; the class and
  register tokens are left out), so CNN and ViT stages are both (B, C, H, W) and CKA flattens
  (or with ``--pool`` averages) them alike. ``forward_intermediates(x, preact=True)`` and
  ``bn_before_relu()`` (feature distillation) work for timm's ResNets, whose stages end in a
  ReLU module (read by a forward pre-hook); other networks raise ValueError naming the stage.

Weights (``pretrained``): False (random init, timm's), True (timm's pretrained weights for
the architecture or ``arch.tag``, fetched from the Hugging Face Hub; offline this is one
:class:`~supkd.errors.CheckpointError` line) or a local ``.safetensors`` / ``.pth`` file,
loaded through timm's pretrained-config file override (``pretrained_cfg_overlay=dict(file=
...)``), so timm's own checkpoint filters (position-embedding resampling for another
``img_size``, input-channel adaptation) apply. Loading is strict: the network is built with
the classes of the weights (read from the file), every tensor must fit, and only then is the
classifier swapped for the requested classes. With ``data_norm`` (the statistics supkd's
loader normalizes with; the tasks pass the data set's), pretrained weights get the
``input_affine`` that maps those inputs exactly onto the weights' own normalization
(``pretrained_cfg["mean"/"std"]``; :mod:`supkd.models.input_affine`).

``spec`` rebuilds the architecture (``create_model(**net.spec)``): the weights travel in the
state dict, so ``pretrained`` is not in the spec and a rebuilt model never downloads; an
``input_affine`` is.

timm is optional (``pip install 'supkd[timm]'``): it is imported when a ``timm/`` model is
built or checked, never when supkd is imported.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from supkd.errors import CheckpointError
from supkd.models.base import EncoderModel
from supkd.models.heads import ProjectionHead, make_classifier
from supkd.models.input_affine import InputAffine, check_input_affine, input_affine_between
from supkd.models.registry import register_model_family

__all__ = [
    "TIMM_EXTRA",
    "TimmEncoder",
    "TimmModel",
    "build_timm",
    "check_timm_name",
    "pretrained_stats",
    "weights_num_classes",
]

TIMM_EXTRA = "pip install 'supkd[timm]'"
#: Arguments of ``timm.create_model`` that supkd sets itself (from the data set and from
#: ``pretrained``); in ``timm_args`` they would silently disagree with the run.
RESERVED_ARGS = (
    "num_classes", "in_chans", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
    "checkpoint_path", "features_only", "model_name",
)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _timm(name: str) -> Any:
    """The timm module, or a one-line ValueError naming the extra."""
    try:
        import timm  # optional dependency: only a timm/ model needs it
    except ImportError:
        raise ValueError(f"model {name!r} needs the timm package: {TIMM_EXTRA}") from None
    return timm


def check_timm_name(name: str) -> str:
    """The timm architecture of ``"timm/<arch>[.tag]"``; ValueError naming the closest
    architectures of ``timm.list_models()`` when timm has no such one (or timm is missing)."""
    timm = _timm(name)
    arch = name.partition("/")[2]
    if not arch or not timm.is_model(arch):
        base = arch.partition(".")[0]
        close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(
            f"unknown timm architecture {arch!r} (model {name!r}), not in timm.list_models()"
            + hint
        )
    return arch


def _check_timm_args(timm_args: Any) -> dict[str, Any]:
    if timm_args is None:
        return {}
    if not isinstance(timm_args, Mapping) or not all(isinstance(k, str) for k in timm_args):
        raise ValueError(f"timm_args: expected a mapping of argument names to values, "
                         f"got {timm_args!r}")
    for key in timm_args:
        if key in RESERVED_ARGS:
            raise ValueError(f"timm_args.{key}: set by supkd (num_classes and in_chans from "
                             "the data set, weights from model.pretrained); remove it")
    return dict(timm_args)


def _weights(pretrained: Any) -> str | Path | None:
    """None (random init), ``"hub"`` (timm's weights) or the local file's path."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        return "hub"
    if not isinstance(pretrained, str | os.PathLike) or not str(pretrained):
        raise ValueError(f"pretrained: expected false, true or a weights file, got {pretrained!r}")
    path = Path(pretrained).expanduser()
    if path.is_dir() or not path.is_file():
        raise CheckpointError(f"model.pretrained {path}: no such file (expected a "
                              f"{' or '.join(WEIGHT_SUFFIXES[:2])} weights file)")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise CheckpointError(f"model.pretrained {path}: expected a file ending in "
                              f"{', '.join(WEIGHT_SUFFIXES)}")
    return path


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split())  # timm's state-dict errors span many lines
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _file_num_classes(timm: Any, path: Path, classifiers: Sequence[str]) -> int:
    """Rows of the classifier weight in a weights file (0 when it has none), read the way
    timm reads the file (EMA weights first, ``module.`` prefixes removed)."""
    names = [f"{c}.weight" for c in classifiers]
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open  # a dependency of timm

            with safe_open(str(path), framework="pt") as f:  # reads the header only
                stored = set(f.keys())
                for key in names:
                    if key in stored:
                        return int(f.get_slice(key).get_shape()[0])
            return 0
        # weights_only: a file holding pickled code is refused here, before timm's own load
        # (whose default is weights_only=False in older timm, e.g. 1.0.11) reads it again.
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # safetensors, torch.load and zipfile errors alike
        raise CheckpointError(f"model.pretrained {path}: cannot be read "
                              f"({_first_line(exc, 120)})") from None
    for key in names:
        if key in state and hasattr(state[key], "shape"):
            return int(state[key].shape[0])
    return 0


def weights_num_classes(name: str, path: str | os.PathLike[str]) -> int:
    """Classes of the classifier in the weights file ``path`` of ``"timm/<arch>"`` (0: the
    file has no classifier); CheckpointError for a missing or unreadable file."""
    arch = check_timm_name(name)
    timm = _timm(name)
    weights = _weights(path)
    assert isinstance(weights, Path)
    cfg = timm.models.get_pretrained_cfg(arch)
    names = cfg.classifier if cfg is not None else None
    names = list(names) if isinstance(names, tuple | list) else [names] if names else []
    return _file_num_classes(timm, weights, names)


def _weights_plan(
    timm: Any, arch: str, weights: str | Path | None, num_classes: int
) -> tuple[int, dict[str, Any]]:
    """(classes to build timm's network with, extra ``timm.create_model`` kwargs)."""
    if weights is None:
        return num_classes, {}
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        raise CheckpointError(f"model.pretrained: timm has no pretrained config for {arch!r}")
    if weights == "hub":
        return int(cfg.num_classes or 0), {"pretrained": True}
    assert isinstance(weights, Path)
    k = weights_num_classes(f"timm/{arch}", weights)
    # num_classes = the file's own: timm then loads strictly (it drops the classifier and
    # loads non-strictly only when the classes differ). custom_load off: a ViT's default
    # config loads Google's .npz format, the file is a state dict.
    overlay = {"file": str(weights), "num_classes": k, "custom_load": False}
    return k, {"pretrained": True, "pretrained_cfg_overlay": overlay}


def _create(
    timm: Any, arch: str, k: int, in_channels: int, args: dict[str, Any],
    load: dict[str, Any], weights: str | Path | None,
) -> nn.Module:
    """``timm.create_model`` with its failures as one line naming the field at fault."""
    offline = weights == "hub" and _hub_unreachable()
    try:
        with _hub_offline(offline):
            return timm.create_model(arch, num_classes=k, in_chans=in_channels, **load, **args)
    except Exception as exc:  # timm raises TypeError, ValueError, AssertionError, RuntimeError
        error = exc
    if offline:
        raise CheckpointError(
            f"model.pretrained: timm's weights of {arch!r} could not be fetched from the "
            f"Hugging Face Hub: {offline} cannot be reached from here and they are not in "
            "the local cache; download them where you are online and pass "
            "model.pretrained=/path/to/model.safetensors") from None
    if weights is not None:
        try:  # the same network without weights: is it the arguments or the weights?
            timm.create_model(arch, num_classes=k, in_chans=in_channels, **args)
        except Exception:
            weights = None
    if weights is None:
        msg = _first_line(error)
        if isinstance(error, TypeError) and "unexpected keyword argument" in msg:
            bad = msg.rsplit("argument", 1)[-1].strip(" '\"")
            raise ValueError(f"timm_args.{bad}: not an argument of timm/{arch} "
                             f"(timm {timm.__version__})") from None
        raise ValueError(f"timm_args: timm/{arch} cannot be built with {args}: {msg}") from None
    raise _weights_error(arch, weights, error, args) from None


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """The Hub's host when a TCP connection to it fails within ``timeout`` seconds (DNS
    included), else None. Without this probe an offline machine spends about a minute in
    huggingface_hub's retries before the first error."""
    import socket
    from urllib.parse import urlparse

    url = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urlparse(url)
    host = parsed.hostname or "huggingface.co"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return host
    try:
        socket.create_connection((host, parsed.port or 443), timeout=timeout).close()
    except OSError:
        return host
    return None


@contextlib.contextmanager
def _hub_offline(on: Any) -> Iterator[None]:
    """huggingface_hub's offline mode (cached files only, one quick error otherwise) for
    the block, when ``on``."""
    constants = sys.modules.get("huggingface_hub.constants") if on else None
    if constants is None and on:
        with contextlib.suppress(ImportError):
            import huggingface_hub.constants as constants
    if constants is None:
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _weights_error(
    arch: str, weights: str | Path, exc: BaseException, args: dict[str, Any]
) -> CheckpointError:
    msg = _first_line(exc, 160)
    if weights != "hub":
        if "state_dict" not in msg:
            return CheckpointError(f"model.pretrained {weights}: cannot be loaded into "
                                   f"timm/{arch}: {msg}")
        return CheckpointError(
            f"model.pretrained {weights}: weights do not fit timm/{arch} built with "
            f"timm_args {args} (the file's network has other arguments?): {msg}"
        )
    if "No pretrained weights exist" in msg:
        return CheckpointError(f"model.pretrained: timm has no pretrained weights for {arch!r}; "
                               "use model.pretrained=false or a weights file")
    # The Hub's own messages run to several sentences; the exception type says enough.
    return CheckpointError(
        f"model.pretrained: timm's weights of {arch!r} could not be fetched from the Hugging "
        f"Face Hub ({type(exc).__name__}; offline?); download them where you are online "
        "and pass model.pretrained=/path/to/model.safetensors"
    )


def pretrained_stats(net: nn.Module, in_channels: int) -> tuple[list[float], list[float]]:
    """(mean, std) per input channel of the loaded weights (their ``pretrained_cfg``).

    A 1-channel network from 3-channel weights sums the first conv's filters over the input
    channels (timm's ``adapt_input_conv``); that equals the 3-channel network on the gray
    image replicated only when all three channels share one mean and one std, so only then
    is an exact correction possible."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean, std = list(cfg.get("mean") or ()), list(cfg.get("std") or ())
    if not mean or len(mean) != len(std):
        raise ValueError("pretrained: the weights' config gives no input mean/std to correct")
    if len(mean) == in_channels:
        return mean, std
    if in_channels == 1 and len(set(mean)) == 1 and len(set(std)) == 1:
        return mean[:1], std[:1]
    raise ValueError(
        f"pretrained: the weights were trained on {len(mean)}-channel images normalized with "
        f"mean {tuple(mean)}, std {tuple(std)}; {in_channels}-channel inputs cannot be "
        "corrected onto them exactly (use data with as many channels)"
    )


class TimmEncoder(nn.Module):
    """Image (B, C, H, W) -> timm's pooled pre-logits feature (B, F), ``input_affine`` first.

    ``net`` is timm's network with its classifier removed; ``stage_names`` name the entries
    of its ``forward_intermediates`` (from ``feature_info``).
    """

    def __init__(self, net: nn.Module, out_dim: int, input_affine: InputAffine | None) -> None:
        super().__init__()
        self.input_affine = input_affine
        self.net = net
        self.out_dim = out_dim
        info = getattr(net, "feature_info", None) or []
        self.stage_names = [str(f.get("module", f"stage{i}")) for i, f in enumerate(info)]
        self.arch = f"timm/{type(net).__name__}"  # build_timm sets the registered name

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        return self.input_affine(x) if self.input_affine is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net.forward_head(net.forward_features(self._affine(x)), pre_logits=True)

    def stages(
        self, x: torch.Tensor, *, preact: bool = False
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(named stage outputs, each (B, C, H, W), pooled embedding (B, F)) in one pass.

        ``preact``: each stage's output before its final ReLU, read by forward pre-hooks on
        the ReLU modules that :meth:`preact_points` finds (timm's ResNets); ValueError
        naming the model and stage for a network without them."""
        net = self.net
        if not hasattr(net, "forward_intermediates"):
            raise ValueError(f"{type(net).__name__} has no forward_intermediates in this timm "
                             "version; layer-wise CKA needs the named stage outputs")
        captured: dict[str, torch.Tensor] = {}
        handles = []
        if preact:
            for name, (act, _) in self.preact_points().items():
                def grab(module, args, name=name):
                    # A clone: the ReLU is in place and would overwrite its input.
                    captured[name] = args[0].clone()
                handles.append(act.register_forward_pre_hook(grab))
        try:
            final, inter = net.forward_intermediates(self._affine(x), intermediates_only=False)
        finally:
            for h in handles:
                h.remove()
        names = self.stage_names
        if len(names) != len(inter) or len(set(names)) != len(names):
            names = [f"stage{i}" for i in range(len(inter))]
        out = dict(zip(names, inter))
        if preact:
            out = {k: captured[k] for k in out}
        return out, net.forward_head(final, pre_logits=True)

    def preact_points(self) -> dict[str, tuple[nn.ReLU, nn.BatchNorm2d]]:
        """Stage name -> (the ReLU module whose input is the stage's pre-activation output,
        the BatchNorm before it), for timm's ResNets: the stem's ``act1`` (after ``bn1``),
        and each stage's last ``BasicBlock`` (``act2``, ``bn2``) or ``Bottleneck`` (``act3``,
        ``bn3``). ValueError naming the model and the first stage without one."""
        net, out = self.net, {}
        for name in self.stage_names:
            mod = net.get_submodule(name)
            found = None
            if name == "act1" and isinstance(mod, nn.ReLU):
                found = (mod, getattr(net, "bn1", None))
            elif isinstance(mod, nn.Sequential) and len(mod):
                block = mod[-1]
                kind = type(block).__name__
                if type(block).__module__ == "timm.models.resnet" and kind in ("BasicBlock",
                                                                                "Bottleneck"):
                    last = "3" if kind == "Bottleneck" else "2"
                    found = (getattr(block, f"act{last}"), getattr(block, f"bn{last}"))
            if found is None or not isinstance(found[0], nn.ReLU) \
                    or not isinstance(found[1], nn.BatchNorm2d):
                raise ValueError(
                    f"{self.arch}: stage {name!r} has no pre-activation output supkd can read "
                    "(timm's forward_intermediates gives post-activation stages; supkd reads "
                    "the ReLU inputs of timm's ResNets only)"
                )
            out[name] = found
        return out


class TimmModel(EncoderModel):
    """A timm network with supkd's interface (see the module docstring): ``forward(x)`` ->
    ``ModelOutput(logits (B, K), embedding (B, F), projection (B, P) | None)``."""

    encoder: TimmEncoder

    def forward_intermediates(
        self, x: torch.Tensor, *, preact: bool = False
    ) -> dict[str, torch.Tensor]:
        """Ordered dict of timm's stages (B, C, H, W) (ViT: patch-token maps), then
        ``embedding`` (B, F) and ``logits`` (B, K): what layer-wise CKA compares.
        ``preact=True``: the stages before their final ReLU, for timm's ResNets (ValueError
        naming the model and stage for other networks: timm's own ``forward_intermediates``
        gives post-activation stages only)."""
        out, emb = self.encoder.stages(x, preact=preact)
        out["embedding"] = emb
        out["logits"] = self.classifier(emb)
        return out

    def bn_before_relu(self) -> dict[str, nn.BatchNorm2d]:
        """Per stage, the BatchNorm before its final ReLU (timm's ResNets; ValueError for
        other networks, as ``forward_intermediates(preact=True)``)."""
        return {k: bn for k, (_, bn) in self.encoder.preact_points().items()}

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """(C, H, W) a network with a fixed input size takes (a ViT's ``img_size``), else
        None (any size)."""
        embed = getattr(self.encoder.net, "patch_embed", None)
        size = getattr(embed, "img_size", None)
        if size is None or getattr(embed, "dynamic_img_size", False):
            return None
        return (int(self.spec["in_channels"]), int(size[0]), int(size[1]))

    def timm_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under timm's own names (the classifier under ``pretrained_cfg``'s
        classifier name), loadable into ``timm.create_model(arch, num_classes=K)``."""
        out = {k.removeprefix("encoder.net."): v for k, v in self.state_dict().items()
               if k.startswith("encoder.net.")}
        name = (getattr(self.encoder.net, "pretrained_cfg", None) or {}).get("classifier")
        name = name[0] if isinstance(name, tuple | list) else name
        for k, v in self.classifier.state_dict().items():
            out[f"{name or 'classifier'}.{k}"] = v
        return out


def _check_image_size(model: TimmModel, in_channels: int, image_size: int) -> None:
    """ValueError when the network cannot take ``image_size`` images (a ViT's img_size)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, in_channels, image_size, image_size))
    except (AssertionError, RuntimeError, ValueError) as exc:
        raise ValueError(
            f"timm/{model.spec['name'].partition('/')[2]} does not take the data's "
            f"{image_size}x{image_size} images ({_first_line(exc, 100)}); set "
            f"model.timm_args.img_size={image_size} (ViTs) or data.image_size"
        ) from None
    finally:
        model.train(was)


@register_model_family("timm")
def build_timm(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    projection_dim: int | None = None,
    timm_args: Mapping[str, Any] | None = None,
    pretrained: bool | str | os.PathLike[str] = False,
    input_affine: Mapping[str, Sequence[float]] | None = None,
    data_norm: tuple[Sequence[float], Sequence[float]] | None = None,
    image_size: int | None = None,
) -> TimmModel:
    """Build ``"timm/<arch>[.tag]"`` (see the module docstring).

    ``timm_args``: keyword arguments of timm's model class (``img_size``, ``patch_size``,
    ``depth``, ``embed_dim``, ``drop_path_rate``, ...). ``pretrained``: False | True | a
    weights file. ``input_affine``: an explicit correction (kept in ``spec``);
    ``data_norm``: ``(mean, std)`` of supkd's inputs, to correct pretrained weights onto
    (ignored without weights or with ``input_affine``). ``image_size``: check with one
    forward that the network takes such images (not kept in ``spec``).
    Raises ValueError (unknown architecture, bad ``timm_args``, timm missing) or
    CheckpointError (weights missing, unreadable, not fitting, not downloadable).
    """
    arch = check_timm_name(name)
    timm = _timm(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels <= 0:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if projection_dim is not None and (not isinstance(projection_dim, int) or projection_dim <= 0):
        raise ValueError(f"projection_dim must be a positive int or None, got {projection_dim!r}")
    args = _check_timm_args(timm_args)
    weights = _weights(pretrained)
    k, load = _weights_plan(timm, arch, weights, num_classes)
    net = _create(timm, arch, k, in_channels, args, load, weights)
    fc = net.get_classifier() if k else None
    net.reset_classifier(0)
    dim = int(getattr(net, "head_hidden_size", None) or net.num_features)
    if isinstance(fc, nn.Linear) and fc.in_features == dim and k == num_classes:
        classifier = fc  # timm's own (and the weights', when loaded)
    else:
        classifier = make_classifier(dim, num_classes)
    affine = check_input_affine(input_affine, in_channels)
    if affine is None and weights is not None and data_norm is not None:
        mean, std = pretrained_stats(net, in_channels)
        affine = input_affine_between(mean, std, data_norm[0], data_norm[1])
    encoder = TimmEncoder(
        net, dim, InputAffine(affine["scale"], affine["shift"]) if affine else None
    )
    head = ProjectionHead(dim, projection_dim) if projection_dim else None
    spec: dict[str, Any] = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "projection_dim": projection_dim,
        "timm_args": args,
    }
    if affine is not None:
        spec["input_affine"] = affine
    encoder.arch = name
    model = TimmModel(encoder, classifier, head, spec)
    if image_size is not None:
        _check_image_size(model, in_channels, int(image_size))
    return model


# find_model_builder calls it, so that `supkd train` and `supkd grid --dry-run` refuse an
# unknown architecture before any data is loaded.
build_timm.check_name = check_timm_name  # type: ignore[attr-defined]
