"""Teacher cache: cached logits equal live teacher logits for the loader's views (bf16 tol)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from supkd.errors import ConfigError
from supkd.train import teacher_cache as tc

PAD = 4
MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)


class TinyTeacher(nn.Module):
    """Conv + BN + linear: small, but not flip- or shift-invariant, so views differ."""

    def __init__(self, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, num_classes)
        self.bn.running_mean.uniform_(-0.1, 0.1)
        self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class UInt8Dataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images_ = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images_)

    def __getitem__(self, i: int):
        return self.images_[i], int(self.labels[i])


def make_bundle(n: int = 12, size: int = 8, seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 5, (n,), generator=g)
    return SimpleNamespace(train=UInt8Dataset(images, labels), mean=MEAN, std=STD)


def normalize(u8: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (u8.float() / 255 - mean) / std


def random_keys(n_images: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, n_images, (batch,), generator=g)
    aug = torch.stack(
        [
            torch.randint(0, 2 * PAD + 1, (batch,), generator=g),
            torch.randint(0, 2 * PAD + 1, (batch,), generator=g),
            torch.randint(0, 2, (batch,), generator=g),
        ],
        dim=1,
    )
    return index, aug


def build(tmp_path: Path, teacher: nn.Module, bundle, **kw) -> tc.TeacherCache:
    cache = tc.get_teacher_cache(
        teacher,
        bundle,
        teacher_dir=tmp_path,
        device="cpu",
        augment="standard",
        representation="logits",
        mode="on",
        progress=False,
        **kw,
    )
    assert cache is not None
    return cache


def test_render_views_matches_torchvision_pad_crop_flip() -> None:
    bundle = make_bundle(n=6, size=8)
    images = bundle.train.images_
    index, aug = random_keys(6, 40, seed=1)
    # every corner case of the offsets and flips, plus random ones
    aug[:4] = torch.tensor([[0, 0, 0], [8, 8, 1], [0, 8, 1], [8, 0, 0]])
    got = tc.render_views(images[index], aug, PAD)
    for i in range(len(index)):
        dy, dx, flip = (int(v) for v in aug[i])
        ref = TF.crop(TF.pad(images[index[i]], [PAD]), dy, dx, 8, 8)
        if flip:
            ref = TF.hflip(ref)
        assert torch.equal(got[i], ref), (i, dy, dx, flip)
    centre = torch.tensor([[PAD, PAD, 0]]).expand(6, 3)
    assert torch.equal(tc.render_views(images, centre, PAD), images)


def test_view_ids_enumerate_all_162_views_once() -> None:
    side = 2 * PAD + 1
    grid = torch.cartesian_prod(torch.arange(side), torch.arange(side), torch.arange(2))
    ids = tc.view_ids(grid, PAD)
    assert tc.num_views(PAD) == 162
    assert torch.equal(ids.sort().values, torch.arange(162))


def test_cached_logits_equal_live_teacher(tmp_path: Path) -> None:
    teacher = TinyTeacher().eval()
    bundle = make_bundle()
    cache = build(tmp_path, teacher, bundle)
    assert cache.logits.shape == (12, 162, 5) and cache.logits.dtype == torch.bfloat16
    images = bundle.train.images_
    for seed in range(3):
        index, aug = random_keys(12, 32, seed)
        with torch.no_grad():
            live = teacher(normalize(tc.render_views(images[index], aug, PAD)))
        cached = cache.lookup(index, aug)
        assert cached.dtype == torch.float32 and cached.shape == live.shape
        # bf16 keeps 8 significant bits: relative error <= 2^-8 per entry
        torch.testing.assert_close(cached, live, rtol=2**-8, atol=1e-3)
        assert not torch.allclose(cached, cache.lookup(index, (aug + 1) % 2), atol=1e-2)


def test_cached_and_live_teacher_give_same_kd_losses(tmp_path: Path) -> None:
    from supkd import losses

    teacher = TinyTeacher().eval()
    bundle = make_bundle()
    cache = build(tmp_path, teacher, bundle)
    images = bundle.train.images_
    index, aug = random_keys(12, 24, seed=7)
    labels = bundle.train.labels[index]
    with torch.no_grad():
        live = teacher(normalize(tc.render_views(images[index], aug, PAD)))
    cached = cache.lookup(index, aug)
    student = torch.randn(24, 5, generator=torch.Generator().manual_seed(3))
    assert set(losses.LOSSES) >= {"logit_mse", "hinton_kl", "supcon_kd"}
    for name in losses.LOSSES:
        if losses.LOSSES[name].multi_stage:
            continue  # reads several stages; the cache holds one representation
        loss = losses.build_loss(name)
        extra = {}
        if loss.needs_index:  # per-sample state (crd): a bank for these 12 images, no updates
            loss.bind(5, 5, 12, seed=0)
            loss.eval()
            extra = {"index": index}
        elif type(loss).bind is not losses.KDLoss.bind:  # learned parts only (cc)
            loss.bind(5, 5, 12, seed=0)
        a, b = loss(student, live, labels, **extra), loss(student, cached, labels, **extra)
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3, msg=name)


def bad_value_keys() -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """Keys of the right shapes and dtypes whose values are out of range (12 images)."""
    index, aug = random_keys(12, 4, seed=0)
    return [
        (torch.tensor([0, 1, 2, 12]), aug, "index out of range"),
        (torch.tensor([0, 1, 2, -1]), aug, "index out of range"),
        (index, aug.clone().index_fill_(1, torch.tensor([0]), 9), "offsets"),
        (index, aug.clone().index_fill_(1, torch.tensor([1]), -1), "offsets"),
        (index, aug.clone().index_fill_(1, torch.tensor([2]), 2), "flip"),
        (index, aug.clone().index_fill_(1, torch.tensor([2]), -1), "flip"),
    ]


def test_bad_keys_raise(tmp_path: Path) -> None:
    cache = build(tmp_path, TinyTeacher().eval(), make_bundle())
    index, aug = random_keys(12, 4, seed=0)
    bad = [
        *bad_value_keys(),
        (index, aug[:, :2], "expected index"),
        (index[:3], aug, "expected index"),
        (index.float(), aug, "integer"),
    ]
    for idx, a, match in bad:
        with pytest.raises(ValueError, match=match):
            cache.lookup(idx, a)
    with pytest.raises(ValueError):
        tc.render_views(torch.zeros(2, 3, 8, 8), torch.zeros(3, 3, dtype=torch.long), PAD)


class HostReads(TorchDispatchMode):
    """Records the ops that copy a tensor's value to the host (``.item()``, ``int()``)
    and the device-side asserts."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))

    @property
    def reads(self) -> int:
        return sum("_local_scalar_dense" in op for op in self.ops)

    @property
    def asserts(self) -> int:
        return sum("_assert_async" in op for op in self.ops)


def test_keys_valid_agrees_with_a_per_key_reference_and_reads_nothing() -> None:
    def reference(index: torch.Tensor, aug: torch.Tensor, n: int) -> bool:
        rows = zip(index.tolist(), aug.tolist(), strict=True)
        return all(
            0 <= i < n and 0 <= dy <= 2 * PAD and 0 <= dx <= 2 * PAD and f in (0, 1)
            for i, (dy, dx, f) in rows
        )

    g = torch.Generator().manual_seed(5)
    cases = [(idx, a) for idx, a, _ in bad_value_keys()]
    # the range ends themselves are valid
    cases.append((torch.tensor([0, 11]), torch.tensor([[0, 0, 0], [2 * PAD, 2 * PAD, 1]])))
    for _ in range(200):  # a few entries just outside the ranges, most inside
        index = torch.randint(-1, 13, (3,), generator=g)
        aug = torch.stack(
            [
                torch.randint(-1, 2 * PAD + 2, (3,), generator=g),
                torch.randint(-1, 2 * PAD + 2, (3,), generator=g),
                torch.randint(-1, 3, (3,), generator=g),
            ],
            dim=1,
        )
        cases.append((index, aug))
    seen = set()
    for index, aug in cases:
        with HostReads() as watch:
            ok = tc.keys_valid(index, aug, 12, PAD)
        assert watch.reads == 0 and ok.shape == () and ok.dtype == torch.bool
        want = reference(index, aug, 12)
        assert bool(ok) == want, (index, aug)
        seen.add(want)
    assert seen == {True, False}


def test_lookup_off_the_cpu_reads_no_key_back_to_the_host() -> None:
    # A meta tensor has no data: any .item()/int() of it raises, and HostReads counts them.
    n, c = 12, 5
    meta = tc.TeacherCache(
        torch.empty(n, tc.num_views(PAD), c, dtype=torch.bfloat16, device="meta"),
        pad=PAD,
        key="k",
    )
    index, aug = random_keys(n, 8, seed=2)
    for keys in [(index, aug), (index.to("meta"), aug.to("meta"))]:
        with HostReads() as default:
            out = meta.lookup(*keys)
        assert out.shape == (8, c) and out.dtype == torch.float32 and out.is_meta
        assert default.reads == 0 and default.asserts == 0  # no check by default off CPU
        with HostReads() as checked:
            meta.lookup(*keys, check=True)
        assert checked.reads == 0 and checked.asserts == 1  # checked, device-side
    with pytest.raises(ValueError, match="expected index"):  # shapes: host metadata only
        meta.lookup(index.to("meta")[:3], aug.to("meta"), check=True)

    # The same lookup on a CPU table checks by default, on the host, with exact messages.
    cpu = tc.TeacherCache(
        torch.zeros(n, tc.num_views(PAD), c, dtype=torch.bfloat16), pad=PAD, key="k"
    )
    with HostReads() as host:
        cpu.lookup(index, aug)
    assert host.reads > 0 and host.asserts == 0
    with HostReads() as off:
        cpu.lookup(index, aug, check=False)
    assert off.reads == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_checked_lookup_on_cuda_does_not_synchronize() -> None:
    n, c = 12, 5
    table = torch.randn(n, tc.num_views(PAD), c, device="cuda").to(torch.bfloat16)
    cache = tc.TeacherCache(table, pad=PAD, key="k")
    index, aug = (t.cuda() for t in random_keys(n, 8, seed=3))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call raises
    try:
        out = cache.lookup(index, aug)
        checked = cache.lookup(index, aug, check=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(out, checked)
    torch.testing.assert_close(out, table[index, tc.view_ids(aug, PAD)].float())


def test_cache_file_is_reused_not_rebuilt(tmp_path: Path, monkeypatch) -> None:
    teacher = TinyTeacher().eval()
    bundle = make_bundle()
    first = build(tmp_path, teacher, bundle)
    assert first.built and first.path is not None and first.path.is_file()
    assert first.path.parent == tmp_path / "teacher_cache"

    def no_build(*args, **kwargs):
        raise AssertionError("cache was rebuilt instead of reused")

    monkeypatch.setattr(tc, "build_cache_table", no_build)
    # a run directory's model.pt resolves to the same folder
    (tmp_path / "model.pt").write_bytes(b"")
    for teacher_dir in (tmp_path, tmp_path / "model.pt"):
        again = tc.get_teacher_cache(
            teacher,
            bundle,
            teacher_dir=teacher_dir,
            device="cpu",
            augment="standard",
            representation="logits",
            mode="auto",  # auto reuses a stored table even on CPU
            progress=False,
        )
        assert again is not None and not again.built and again.path == first.path
        assert torch.equal(again.logits, first.logits)


def test_damaged_cache_file_is_rebuilt(tmp_path: Path) -> None:
    teacher = TinyTeacher().eval()
    bundle = make_bundle()
    first = build(tmp_path, teacher, bundle)
    first.path.write_bytes(b"not a torch file")
    again = build(tmp_path, teacher, bundle)
    assert again.built and torch.equal(again.logits, first.logits)


def test_key_changes_with_teacher_data_and_normalization(tmp_path: Path) -> None:
    bundle = make_bundle()
    base = build(tmp_path, TinyTeacher(seed=0).eval(), bundle)
    other_teacher = build(tmp_path, TinyTeacher(seed=1).eval(), bundle)
    other_data = build(tmp_path, TinyTeacher(seed=0).eval(), make_bundle(seed=5))
    renorm = SimpleNamespace(train=bundle.train, mean=(0.5, 0.5, 0.5), std=STD)
    other_norm = build(tmp_path, TinyTeacher(seed=0).eval(), renorm)
    keys = {c.key for c in (base, other_teacher, other_data, other_norm)}
    paths = {c.path for c in (base, other_teacher, other_data, other_norm)}
    assert len(keys) == 4 and len(paths) == 4
    assert all(c.built for c in (other_teacher, other_data, other_norm))
    # same teacher weights in a fresh module object -> same key
    assert build(tmp_path, TinyTeacher(seed=0).eval(), bundle).key == base.key


def test_when_cache_applies(tmp_path: Path) -> None:
    teacher, bundle = TinyTeacher().eval(), make_bundle()
    common = {"teacher_dir": tmp_path, "device": "cpu", "progress": False}
    assert (
        tc.get_teacher_cache(
            teacher, bundle, augment="standard", representation="logits", mode="off", **common
        )
        is None
    )
    for augment, rep in (("supcon", "logits"), ("standard", "embedding")):
        assert (
            tc.get_teacher_cache(
                teacher, bundle, augment=augment, representation=rep, mode="auto", **common
            )
            is None
        )
        with pytest.raises(ConfigError):
            tc.get_teacher_cache(
                teacher, bundle, augment=augment, representation=rep, mode="on", **common
            )
    with pytest.raises(ConfigError, match="auto"):
        tc.get_teacher_cache(
            teacher, bundle, augment="standard", representation="logits", mode="yes", **common
        )
    # auto on CPU with no stored table: not built (a CPU build would cost 162 teacher epochs)
    assert (
        tc.get_teacher_cache(
            teacher, bundle, augment="standard", representation="logits", mode="auto", **common
        )
        is None
    )
    assert not (tmp_path / "teacher_cache").exists()
    # teacher mode restored after a build
    teacher.train()
    build(tmp_path, teacher, bundle)
    assert teacher.training


@pytest.mark.parametrize("gpu_resident", ["on", "off"])
def test_cache_keys_match_the_training_loader(tmp_path: Path, gpu_resident: str) -> None:
    """Batch.aug = [dy, dx, flip] from supkd.data indexes exactly the view in Batch.x, on
    both loader paths: the cached logits equal the live teacher on the loader's own x."""
    from supkd.data import DataBundle, TensorImageDataset, make_loader

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 5, (20,), generator=g)
    ds = TensorImageDataset(images, labels, [str(i) for i in range(5)])
    bundle = DataBundle(
        name="tiny",
        train=ds,
        val=None,
        test=ds,
        num_classes=5,
        classes=ds.classes,
        image_size=8,
        mean=MEAN,
        std=STD,
        in_channels=3,
        pad=PAD,
    )
    teacher = TinyTeacher().eval()
    cache = build(tmp_path, teacher, bundle)
    loader = make_loader(
        bundle,
        "train",
        8,
        train=True,
        augment="standard",
        device="cpu",
        seed=3,
        num_workers=0,
        gpu_resident=gpu_resident,
    )
    seen = 0
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            assert batch.aug is not None and batch.index is not None
            expect = normalize(tc.render_views(images[batch.index], batch.aug, PAD))
            torch.testing.assert_close(batch.x, expect, rtol=0, atol=1e-5)
            with torch.no_grad():
                live = teacher(batch.x)
            torch.testing.assert_close(
                cache.lookup(batch.index, batch.aug), live, rtol=2**-8, atol=1e-3
            )
            seen += len(batch.y)
    assert seen == 32  # 2 epochs x 2 full batches of 8 (drop_last)


def test_auto_on_cpu_without_a_stored_table_reads_and_hashes_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    teacher, bundle = TinyTeacher().eval(), make_bundle()

    def fail(*args, **kwargs):
        raise AssertionError("the training images were read or hashed")

    monkeypatch.setattr(tc, "cache_key", fail)
    monkeypatch.setattr(tc, "dataset_images", fail)
    monkeypatch.setattr(tc, "build_cache_table", fail)

    def auto(teacher_dir):
        return tc.get_teacher_cache(
            teacher, bundle, teacher_dir=teacher_dir, device="cpu", augment="standard",
            representation="logits", mode="auto", progress=False,
        )  # fmt: skip

    assert auto(tmp_path) is None  # no teacher_cache/ folder
    folder = tmp_path / "teacher_cache"
    folder.mkdir()
    assert auto(tmp_path) is None  # an empty one
    (folder / ".0123abcd.pt.abcd1234.tmp").write_bytes(b"x")  # a killed write's leftover
    assert auto(tmp_path) is None
    # With a stored table present the key must be computed: the failing hash now runs.
    (folder / "0123abcd.pt").write_bytes(b"x")
    with pytest.raises(AssertionError, match="hashed"):
        auto(tmp_path)


def test_auto_on_cpu_does_not_rebuild_another_teachers_table(tmp_path: Path, monkeypatch) -> None:
    bundle = make_bundle()
    other = build(tmp_path, TinyTeacher(seed=1).eval(), bundle)  # a table, not this teacher's

    def no_build(*args, **kwargs):
        raise AssertionError("built on CPU in mode auto")

    monkeypatch.setattr(tc, "build_cache_table", no_build)
    common = {"device": "cpu", "augment": "standard", "representation": "logits"}
    teacher = TinyTeacher(seed=0).eval()
    assert (
        tc.get_teacher_cache(
            teacher, bundle, teacher_dir=tmp_path, mode="auto", progress=False, **common
        )
        is None
    )
    # This teacher's own table, stored under its key but damaged: skipped, not rebuilt.
    key = tc.cache_key(tc.dataset_images(bundle.train), teacher, MEAN, STD, PAD)
    (tmp_path / "teacher_cache" / f"{key[:32]}.pt").write_bytes(b"damaged")
    assert (
        tc.get_teacher_cache(
            teacher, bundle, teacher_dir=tmp_path, mode="auto", progress=False, **common
        )
        is None
    )
    assert other.path.is_file()
