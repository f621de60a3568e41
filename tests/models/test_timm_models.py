"""``timm/<arch>`` models: supkd's interface over timm's networks, weights, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from supkd.errors import CheckpointError, ConfigError
from supkd.models import ModelOutput, create_model, load_model, save_model
from supkd.models.timm_models import TimmModel

timm = pytest.importorskip("timm")
FAMILIES = ["cnn", "convnext", "vit"]
CIFAR = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def _build(timm_tiny, family, **kw):
    name, args = timm_tiny[family]
    kw.setdefault("num_classes", 10)
    return create_model(name, timm_args=args, **kw)


def _normalize(pix, mean, std):
    return (pix - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_interface_of_supkd_models(timm_tiny, family):
    torch.manual_seed(0)
    net = _build(timm_tiny, family, in_channels=1, projection_dim=16).eval()
    x = torch.randn(4, 1, 32, 32)
    out = net(x)
    assert isinstance(net, TimmModel) and isinstance(out, ModelOutput)
    assert out.logits.shape == (4, 10) and out.embedding.shape == (4, net.embedding_dim)
    assert out.projection.shape == (4, 16)
    assert torch.allclose(out.projection.norm(dim=1), torch.ones(4), atol=1e-5)
    # The classifier reads the embedding; the encoder alone gives the embedding.
    assert torch.allclose(net.classifier(net.encoder(x)), out.logits, atol=1e-6)
    feats = net.forward_intermediates(x)
    names = list(feats)
    assert names[-2:] == ["embedding", "logits"]
    stages = names[:-2]
    assert stages == [f["module"] for f in net.encoder.net.feature_info]
    assert all(feats[s].dim() == 4 and feats[s].shape[0] == 4 for s in stages)
    # One pass through timm's forward_intermediates gives what forward gives.
    assert torch.allclose(feats["embedding"], out.embedding, atol=1e-5)
    assert torch.allclose(feats["logits"], out.logits, atol=1e-5)
    # The spec rebuilds the network, and a model file round-trips it.
    again = create_model(**net.spec)
    again.load_state_dict(net.state_dict())
    assert torch.equal(again.eval()(x).logits, out.logits)


def test_vit_stages_are_patch_token_maps(timm_tiny):
    net = _build(timm_tiny, "vit", in_channels=3).eval()
    feats = net.forward_intermediates(torch.randn(2, 3, 32, 32))
    # 32 / patch 8 = 4x4 patch tokens of width 32, class token left out.
    assert [s for s in feats if s.startswith("blocks")] == ["blocks.0", "blocks.1"]
    assert feats["blocks.0"].shape == (2, 32, 4, 4)
    assert net.input_size == (3, 32, 32)


def test_model_file_round_trip_and_freeze(timm_tiny, tmp_path):
    torch.manual_seed(1)
    net = _build(timm_tiny, "convnext", in_channels=3, projection_dim=8)
    path = save_model(tmp_path / "model.pt", net, {"task": "supcon"})
    again = load_model(path)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(again(x).embedding, net.eval()(x).embedding)
    again.freeze_encoder(True).train()
    assert not again.encoder.training and again.classifier.training
    assert not any(p.requires_grad for p in again.encoder.parameters())
    assert all(p.requires_grad for p in again.classifier.parameters())


def test_timm_state_dict_loads_back_into_timm(timm_tiny):
    name, args = timm_tiny["cnn"]
    net = create_model(name, num_classes=5, timm_args=args).eval()
    ref = timm.create_model("resnet10t", num_classes=5, **args).eval()
    ref.load_state_dict(net.timm_state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(ref(x), net(x).logits, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "close"),
    [("timm/convnext_attoo", "convnext_atto"), ("timm/resnet10", "resnet10t"),
     ("timm/no_such_net_at_all", None)],
)
def test_unknown_architecture_names_close_matches(name, close):
    with pytest.raises(ValueError, match="unknown timm architecture") as info:
        create_model(name)
    msg = str(info.value)
    assert "\n" not in msg
    assert (close in msg.split("closest:")[1]) if close else "closest" not in msg


def test_unknown_architecture_is_a_config_error_before_any_work():
    from supkd.train.checks import load_run_config

    with pytest.raises(ConfigError, match=r"'model.name'.*closest: vit_tiny_patch16_224"):
        load_run_config({}, ["model.name=timm/vit_tiny_patch16_22"])


@pytest.mark.parametrize(
    ("args", "field"),
    [({"foo": 1}, "timm_args.foo: not an argument"),
     ({"img_size": -3}, "timm_args: timm/vit_tiny_patch16_224 cannot be built"),
     ({"depth": "x"}, "timm_args: "),
     ({"num_classes": 3}, "timm_args.num_classes: set by supkd"),
     ({"in_chans": 3}, "timm_args.in_chans: set by supkd")],
)
def test_bad_timm_args_name_the_field(args, field):
    with pytest.raises(ValueError) as info:
        create_model("timm/vit_tiny_patch16_224", timm_args=args)
    assert str(info.value).startswith(field) and "\n" not in str(info.value)


def test_a_size_the_network_does_not_take_is_named():
    with pytest.raises(ValueError, match=r"32x32 images.*timm_args.img_size=32"):
        create_model("timm/vit_tiny_patch16_224",
                     timm_args={"depth": 1, "embed_dim": 32, "num_heads": 2}, image_size=32)


def test_model_fields_of_another_family_are_refused(tiny_digits_bundle):
    from supkd.train.checks import load_run_config
    from supkd.train.tasks.base import new_model

    cfg = load_run_config({}, ["model.name=timm/resnet10t", "model.width=8"])
    with pytest.raises(ConfigError, match=r"'model.width': model 'timm/resnet10t' does not"):
        new_model(cfg, tiny_digits_bundle)
    cfg = load_run_config({}, ["model.timm_args={img_size: 32}"])
    with pytest.raises(ConfigError, match=r"'model.timm_args': model 'resnet18' does not"):
        new_model(cfg, tiny_digits_bundle)


@pytest.fixture
def tiny_digits_bundle():
    from types import SimpleNamespace

    return SimpleNamespace(num_classes=10, in_channels=1, mean=(0.3,), std=(0.4,),
                           image_size=32, name="digits")


# --- weights ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_vit(tmp_path_factory, timm_tiny):
    """A randomly initialized timm ViT (7 classes) saved as .safetensors and .pth."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    _, args = timm_tiny["vit"]
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=7, **args).eval()
    root = tmp_path_factory.mktemp("weights")
    save_file(ref.state_dict(), str(root / "vit.safetensors"))
    torch.save({"state_dict": ref.state_dict()}, root / "vit.pth")  # a wrapped checkpoint
    return ref, root


@pytest.mark.parametrize("file", ["vit.safetensors", "vit.pth"])
def test_local_weights_with_their_normalization_corrected(saved_vit, timm_tiny, file):
    ref, root = saved_vit
    _, args = timm_tiny["vit"]
    net = create_model("timm/vit_tiny_patch16_224", num_classes=7, timm_args=args,
                       pretrained=str(root / file), data_norm=CIFAR).eval()
    mean, std = ref.pretrained_cfg["mean"], ref.pretrained_cfg["std"]
    assert net.spec["input_affine"]["scale"] == pytest.approx(
        [sd / st for sd, st in zip(CIFAR[1], std)])
    assert "pretrained" not in net.spec  # the weights travel in the state dict
    pix = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = net(_normalize(pix, *CIFAR))  # supkd's inputs: CIFAR statistics
        theirs = ref(_normalize(pix, mean, std))  # timm's model on its own normalization
    assert torch.allclose(ours.logits, theirs, atol=1e-5, rtol=0)
    # Without data_norm the weights see the inputs as they are: no correction.
    plain = create_model("timm/vit_tiny_patch16_224", num_classes=7, timm_args=args,
                         pretrained=str(root / file)).eval()
    assert "input_affine" not in plain.spec
    assert torch.allclose(plain(_normalize(pix, mean, std)).logits, theirs, atol=1e-5)


def test_other_classes_keep_the_features_and_get_a_fresh_classifier(saved_vit, timm_tiny):
    ref, root = saved_vit
    _, args = timm_tiny["vit"]
    net = create_model("timm/vit_tiny_patch16_224", num_classes=10, timm_args=args,
                       pretrained=str(root / "vit.safetensors")).eval()
    x = torch.randn(2, 3, 32, 32)
    assert net.classifier.out_features == 10
    expected = ref.forward_head(ref.forward_features(x), pre_logits=True)
    assert torch.allclose(net(x).embedding, expected, atol=1e-5)


def test_weights_that_do_not_fit_or_are_not_there(saved_vit, timm_tiny, tmp_path):
    _, root = saved_vit
    _, args = timm_tiny["vit"]
    deeper = {**args, "depth": 3}
    with pytest.raises(CheckpointError, match=r"vit.pth: weights do not fit .*depth.*3"):
        create_model("timm/vit_tiny_patch16_224", num_classes=7, timm_args=deeper,
                     pretrained=str(root / "vit.pth"))
    with pytest.raises(CheckpointError, match="no such file"):
        create_model("timm/vit_tiny_patch16_224", pretrained=str(tmp_path / "none.pth"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors: cannot be read"):
        create_model("timm/vit_tiny_patch16_224", pretrained=str(tmp_path / "junk.safetensors"))
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(CheckpointError, match="expected a file ending in"):
        create_model("timm/vit_tiny_patch16_224", pretrained=str(tmp_path / "w.txt"))


def test_hub_weights_offline_are_one_line(monkeypatch):
    import huggingface_hub.constants

    # What HF_HUB_OFFLINE=1 sets at import: the Hub client fails at once, no network tried.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as info:
        create_model("timm/resnet10t", pretrained=True)
    msg = str(info.value)
    assert "could not be fetched from the Hugging Face Hub" in msg and "\n" not in msg
    assert "model.pretrained=/path/to/model.safetensors" in msg


def test_a_gray_input_is_corrected_only_with_uniform_statistics(timm_tiny, tmp_path):
    from safetensors.torch import save_file

    # ViT statistics are 0.5 in every channel: the 1-channel ViT (timm sums the patch filters
    # over RGB) on gray images is exactly the RGB ViT on them in three channels.
    _, vit_args = timm_tiny["vit"]
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10, **vit_args).eval()
    save_file(vit.state_dict(), str(tmp_path / "v.safetensors"))
    digits = ((0.3,), (0.4,))
    gray_net = create_model("timm/vit_tiny_patch16_224", num_classes=10, in_channels=1,
                            timm_args=vit_args, pretrained=str(tmp_path / "v.safetensors"),
                            data_norm=digits).eval()
    gray = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = gray_net(_normalize(gray, *digits)).logits
        theirs = vit(_normalize(gray.expand(-1, 3, -1, -1), (0.5,) * 3, (0.5,) * 3))
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    # ImageNet statistics differ per channel: no exact 1-channel correction exists.
    name, args = timm_tiny["cnn"]
    ref = timm.create_model("resnet10t", num_classes=4, **args)
    save_file(ref.state_dict(), str(tmp_path / "r.safetensors"))
    with pytest.raises(ValueError, match="3-channel images normalized with mean"):
        create_model(name, num_classes=4, in_channels=1, timm_args=args,
                     pretrained=str(tmp_path / "r.safetensors"), data_norm=((0.3,), (0.4,)))


@pytest.mark.slow
def test_without_timm_supkd_works_and_a_timm_model_is_one_line_naming_the_extra():
    # One interpreter (torch takes seconds to import): importing supkd loads neither timm nor
    # wandb; then, as in an environment without timm, ResNets work and timm/ models say
    # which extra to install.
    code = (
        "import sys\n"
        "import supkd.models, supkd.train, supkd.importers, supkd.analysis.layerwise\n"
        "print(sorted(m for m in ('timm', 'wandb') if m in sys.modules))\n"
        "sys.modules['timm'] = None\n"  # `import timm` now raises ImportError
        "from supkd.models import create_model\n"
        "create_model('resnet18', width=4)\n"
        "try:\n"
        "    create_model('timm/resnet10t')\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "[]", "model 'timm/resnet10t' needs the timm package: pip install 'supkd[timm]'"]


def test_channels_last_and_grad_reach_every_parameter(timm_tiny):
    net = _build(timm_tiny, "convnext", in_channels=3, projection_dim=8)
    net = net.to(memory_format=torch.channels_last).train()
    out = net(torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    (out.logits.sum() + out.projection.sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []
    assert isinstance(net.encoder.net, nn.Module)


def test_a_run_config_with_pretrained_weights_corrects_onto_the_data(saved_vit, timm_tiny):
    from types import SimpleNamespace

    from supkd.train.checks import load_run_config
    from supkd.train.tasks.base import new_model

    ref, root = saved_vit
    name, args = timm_tiny["vit"]
    cfg = load_run_config({"model": {"name": name, "timm_args": args,
                                     "pretrained": str(root / "vit.pth")}})
    bundle = SimpleNamespace(num_classes=7, in_channels=3, mean=CIFAR[0], std=CIFAR[1],
                             image_size=32)
    net = new_model(cfg, bundle).eval()
    pix = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(_normalize(pix, *CIFAR)).logits,
                              ref(_normalize(pix, (0.5,) * 3, (0.5,) * 3)), atol=1e-5)
    cfg = load_run_config({"model": {"name": name, "timm_args": args}})
    bundle.image_size = 16  # the ViT takes 32-pixel images only: refused before training
    with pytest.raises(ConfigError, match=r"config section 'model': .*16x16 images"):
        new_model(cfg, bundle)
