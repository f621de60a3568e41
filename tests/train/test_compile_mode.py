"""``train.compile_mode``: validated, handed to ``torch.compile`` for every network of the
task, runs a tiny fit on CPU with inductor, and (CUDA only) keeps the loop correct under the
CUDA-graph modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from supkd.config import TrainConfig
from supkd.errors import ConfigError
from supkd.train import fit
from supkd.train.checks import load_run_config
from supkd.train.engine import CUDAGRAPH_COMPILE_MODES
from supkd.train.tasks import Task

MODES = ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


class TwoNetTask(Task):
    """CE on ``model``; a frozen ``other`` network adds a constant, so that ``networks()``
    returns two modules (as the distill task does with its teacher)."""

    name = "two_net_test"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = _net()
        self.other = _net().requires_grad_(False)

    def training_step(self, batch):
        logits = self.model(batch.x)
        with torch.no_grad():
            bias = self.other(batch.x).mean()
        loss = F.cross_entropy(logits, batch.y) + 0.0 * bias
        return {"loss": loss, "ce": loss.detach()}

    def predict(self, x):
        return self.model(x)

    def networks(self):
        return [self.model, self.other]

    @classmethod
    def build(cls, cfg, bundle, device):
        return cls()


def _loader(n: int = 16, batch: int = 8, size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def test_compile_mode_default_and_all_values_validate():
    assert load_run_config({}).train.compile_mode == "default"
    for mode in MODES:
        assert load_run_config({}, [f"train.compile_mode={mode}"]).train.compile_mode == mode


def test_bad_compile_mode_names_the_field():
    with pytest.raises(ConfigError, match=r"train\.compile_mode"):
        load_run_config({}, ["train.compile_mode=fastest"])


def test_cudagraph_modes_are_the_modes_torch_records_graphs_for():
    from torch._inductor import list_mode_options

    graphed = {m for m in MODES if list_mode_options(m).get("triton.cudagraphs")}
    assert graphed == set(CUDAGRAPH_COMPILE_MODES)


@pytest.mark.parametrize("mode", MODES)
def test_mode_reaches_compile_for_every_network(monkeypatch, mode):
    calls: list[tuple[nn.Module, dict]] = []

    def fake_compile(self, *args, **kwargs):  # records instead of compiling
        calls.append((self, kwargs))

    monkeypatch.setattr(nn.Module, "compile", fake_compile)
    task = TwoNetTask()
    cfg = TrainConfig(epochs=1, compile="on", compile_mode=mode, progress=False)
    res = fit(task, _loader(), train=cfg, quiet=True, handle_signals=False)
    assert res["status"] == "completed"
    assert [m for m, _ in calls] == [task.model, task.other]
    assert all(kw == {"mode": mode} for _, kw in calls)


def test_compile_off_ignores_the_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: calls.append(k))
    cfg = TrainConfig(epochs=1, compile="off", compile_mode="reduce-overhead", progress=False)
    fit(TwoNetTask(), _loader(), train=cfg, quiet=True, handle_signals=False)
    assert calls == []


@pytest.fixture(scope="module")
def inductor_cpu():
    """Skip when inductor cannot build CPU kernels here (no C++ compiler, no headers)."""
    try:
        fn = torch.compile(lambda t: (t * 2).relu(), backend="inductor")
        fn(torch.randn(4))
    except Exception as exc:  # whatever inductor raises: a missing toolchain, not our bug
        pytest.skip(f"torch.compile (inductor) cannot compile on this CPU: {exc!r}"[:200])
    finally:
        torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "max-autotune-no-cudagraphs"])
def test_compiled_fit_on_cpu_matches_eager(inductor_cpu, mode):
    """Two steps and one evaluation with inductor kernels give eager's losses and weights
    (float32 on CPU; inductor may reorder reductions, hence the tolerance)."""
    from torch._dynamo.utils import counters

    results, weights, graphs = [], [], []
    for compile_ in ("off", "on"):
        torch._dynamo.reset()
        counters.clear()
        task = TwoNetTask()
        cfg = TrainConfig(
            epochs=1, compile=compile_, compile_mode=mode, progress=False, log_every=1
        )
        res = fit(task, _loader(), train=cfg, test_loader=_loader(), quiet=True,
                  handle_signals=False)
        assert res["status"] == "completed" and res["steps"] == 2
        results.append(res)
        weights.append({k: v.detach().clone() for k, v in task.model.state_dict().items()})
        graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert graphs[0] == 0 and graphs[1] > 0  # the second fit really ran compiled graphs
    eager, compiled = weights
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-4, atol=1e-5, msg=k)
    assert results[1]["test_acc"] == results[0]["test_acc"]


# ---------------------------------------------------------------------------------------
# CUDA graphs (skipped without a GPU)

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


class ViewPartTask(Task):
    """CE task whose extra part is a *view* of the compiled network's output, the riskiest
    thing a task can return under CUDA graphs; it records every step's value on the host."""

    name = "view_part_test"

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        from supkd.models import create_model

        torch.manual_seed(0)
        self.model = create_model("resnet18", num_classes=10, width=width)
        self.seen: list[float] = []

    def training_step(self, batch):
        logits = self.model(batch.x).logits
        part = logits[0, 0].detach()
        self.seen.append(float(part.float().item()))  # a host read: test only
        loss = F.cross_entropy(logits.float(), batch.y)
        return {"loss": loss, "logit00": part}

    def predict(self, x):
        return self.model(x).logits

    @classmethod
    def build(cls, cfg, bundle, device):
        return cls()


def _cuda_loader(n: int, batch: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


@cuda_only
def test_cuda_reduce_overhead_epoch_means_match_the_steps(tmp_path):
    """Two epochs with evaluation, clipping and a mid-epoch checkpoint under CUDA graphs
    (``reduce-overhead``; ``max-autotune`` takes the same engine path but autotunes for
    minutes): each epoch's logged mean of the part equals the mean of the values the steps
    saw (a stored part overwritten by a later replay would break it), and inductor really
    ran the step as CUDA graphs (no "skipping cudagraphs")."""
    import json

    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    task = ViewPartTask()
    cfg = TrainConfig(epochs=2, compile="on", compile_mode="reduce-overhead", amp="off",
                      progress=False, log_every=3, grad_clip=5.0, checkpoint_every_steps=5)
    res = fit(task, _cuda_loader(256, 32), train=cfg, device="cuda", run_dir=tmp_path,
              test_loader=_cuda_loader(128, 64), quiet=True, handle_signals=False)
    skips = counters["inductor"]["cudagraph_skips"]
    torch._dynamo.reset()
    assert res["status"] == "completed" and res["steps"] == 16
    assert res["test_acc"] is not None
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2 and len(task.seen) == 16
    for e, rec in enumerate(records):
        expected = sum(task.seen[8 * e : 8 * (e + 1)]) / 8
        assert rec["train_logit00"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert skips == 0, f"inductor skipped CUDA graphs {skips} times (see its warnings)"


@cuda_only
def test_cuda_distill_run_with_reduce_overhead(tmp_path):
    """Student and live teacher both compiled with CUDA graphs in the same step."""
    from supkd.train import run

    base = ["data.name=digits", "data.image_size=16", "model.width=8", "train.epochs=1",
            "train.batch_size=64", "train.progress=false", "device=cuda"]
    t = run(load_run_config({"name": "t"}, base), tmp_path / "teacher", quiet=True)
    assert t["status"] == "completed"
    torch._dynamo.reset()
    s = run(load_run_config({"name": "s"}, [*base, "task.name=distill",
                                        f"task.teacher={tmp_path / 'teacher'}",
                                        "task.loss=hinton_kl", "task.teacher_cache=off",
                                        "model.width=4", "train.compile=on",
                                        "train.compile_mode=reduce-overhead",
                                        "train.ema_decay=0.9"]),
            tmp_path / "student", quiet=True)
    assert s["status"] == "completed", s
    assert s["test_acc"] is not None
    torch._dynamo.reset()
