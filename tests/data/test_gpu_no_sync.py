"""The GPU-resident loader's per-batch path does device work only: no host-to-device copy
(which waits for all queued GPU work when it comes from pageable memory), no device-to-host
read (.item()/.tolist()/.cpu()), and its epoch-at-once parameter draw gives the batches a
per-batch draw gives.

Run on the ``meta`` device on CPU machines: a meta tensor has no data, so any read of it
on the host raises, and every op that takes a CPU tensor into a meta result is a
host-to-device transfer, which a dispatch mode records."""

from __future__ import annotations

import pytest
import torch
from host_to_device import HostToDevice  # tests/data/host_to_device.py

from supkd.data import DataBundle, DataConfig, TensorImageDataset, build_data, make_loader
from supkd.data.gpu import supcon_views
from supkd.data.sampling import make_plan, split_batches

CASES = [("standard", 1), ("standard", 2), ("supcon", 1), ("supcon", 2), ("none", 2)]


@pytest.fixture(scope="module")
def bundles() -> dict[str, DataBundle]:
    digits = build_data(DataConfig(name="digits", subset=100), seed=0)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (70, 3, 12, 12), dtype=torch.uint8, generator=g)
    ds = TensorImageDataset(images, torch.arange(70) % 7, [str(i) for i in range(7)])
    rgb = DataBundle(
        "rgb", ds, None, ds, 7, ds.classes, 12, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), 3, pad=2
    )
    return {"digits": digits, "rgb": rgb}




@pytest.mark.parametrize("name", ["digits", "rgb"])
@pytest.mark.parametrize(("augment", "views"), CASES)
def test_per_batch_path_copies_nothing_between_host_and_device(
    bundles, monkeypatch, name: str, augment: str, views: int
) -> None:
    bundle = bundles[name]
    kw = dict(train=True, views=views, augment=augment, seed=1, gpu_resident="on")
    loader = make_loader(bundle, "train", 16, device="meta", **kw)
    ep = loader._gpu.prepare(loader._plan(0))
    # Everything the batches index is already on the loader's device.
    assert all(t.device.type == "meta" for t in ep.device_tensors())
    assert (ep.aug is not None) == (augment == "standard")
    assert (ep.supcon is not None) == (augment == "supcon")

    # torch.tensor(..., device=d) copies from the host below the dispatch mode: count it.
    made: list[str] = []
    real_tensor, real_as_tensor = torch.tensor, torch.as_tensor

    def spy(real):
        def f(*a, **k):
            made.append(str(k.get("device")))
            return real(*a, **k)

        return f

    monkeypatch.setattr(torch, "tensor", spy(real_tensor))
    monkeypatch.setattr(torch, "as_tensor", spy(real_as_tensor))
    watch = HostToDevice()
    with watch:
        # .item()/.tolist()/.cpu() of a meta tensor raise here.
        batches = list(loader._gpu.batches(ep))
    monkeypatch.undo()
    assert watch.ops == [] and made == []

    ref = list(make_loader(bundle, "train", 16, device="cpu", **kw))
    assert len(batches) == len(ref) == len(bundle.train) // 16
    for b, r in zip(batches, ref):
        assert b.x.device.type == b.y.device.type == b.index.device.type == "meta"
        assert b.x.shape == r.x.shape and b.y.shape == r.y.shape
        assert (b.aug is None) == (r.aug is None)


@pytest.mark.parametrize(("name", "views"), [("digits", 2), ("rgb", 2), ("rgb", 1)])
def test_epoch_drawn_supcon_batches_equal_per_batch_draws(bundles, name: str, views: int) -> None:
    """The epoch's SupCon parameters are drawn up front but from the same stream, batch after
    batch: the batches equal supcon_views() called per batch on the plan's generator."""
    bundle = bundles[name]
    loader = make_loader(
        bundle, "train", 16, train=True, views=views, augment="supcon", seed=4, gpu_resident="on"
    )
    loader.set_epoch(2)
    got = list(loader)
    plan = make_plan(len(bundle.train), seed=4, epoch=2, shuffle=True, views=views, pad=bundle.pad)
    m = torch.tensor(bundle.mean).view(-1, 1, 1)
    s = torch.tensor(bundle.std).view(-1, 1, 1)
    idx = split_batches(plan.order, 16, drop_last=True)
    assert len(got) == len(idx) > 1
    for b, i in zip(got, idx):
        ref = supcon_views(bundle.train.images[i], views, plan.generator)
        ref = (ref - m) / s
        assert torch.equal(b.index, i)
        torch.testing.assert_close(b.x, ref if views > 1 else ref[:, 0], rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("augment", "views"), CASES)
def test_cuda_per_batch_path_never_synchronizes(bundles, augment: str, views: int) -> None:
    loader = make_loader(
        bundles["rgb"], "train", 16, train=True, views=views, augment=augment, device="cuda"
    )
    assert loader.gpu_resident
    ep = loader._gpu.prepare(loader._plan(0))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = list(loader._gpu.batches(ep))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(batches) == len(loader)
