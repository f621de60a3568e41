"""Report tables as data: the registry the report iterates over, a table added as one entry,
and the KD benchmark tables (last and best epoch, Welch p against KD, published numbers)
from runs written through RunDir/RunResult."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats as st

from supkd.experiments.report import write_report
from supkd.experiments.store import load_run
from supkd.experiments.tables import TABLES, TableSpec, register_table
from supkd.experiments.tables.kd_benchmark import arch_key, method_columns, pair_row
from supkd.experiments.tables.spec import load_numbers
from supkd.train.run_dir import RunDir, RunResult

REPO = Path(__file__).resolve().parents[2]
NUMBERS = REPO / "src" / "supkd" / "experiments" / "published_kd_benchmark.yaml"

# The 13 pairs of issue 21 (RepDistiller's two CIFAR-100 tables).
PAIRS = [("resnet56", "resnet20"), ("resnet110", "resnet32"), ("resnet110", "resnet20"),
         ("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"),
         ("vgg13", "vgg8"), ("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"),
         ("ResNet50", "vgg8"), ("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"),
         ("wrn_40_2", "ShuffleV1")]


def write_run(root: Path, name: str, meta: dict, last: float | None,
              epochs: list[float | None], status: str = "completed") -> Path:
    """A run directory as the engine writes it: config.yaml, one metrics.jsonl line per epoch
    (``test_acc`` None on an epoch that was not evaluated) and result.json (RunResult)."""
    rd = RunDir(root / name)
    rd.write_config({"name": name, "seed": meta.get("seed", 0), "meta": meta,
                     "data": {"name": "cifar100"}, "model": {"name": meta["student_arch"]},
                     "optim": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "step"},
                     "train": {"epochs": len(epochs), "batch_size": 64},
                     "task": {"name": "ce" if meta["method"] == "ce" else "distill"}})
    for i, acc in enumerate(epochs):
        rec = {"epoch": i + 1, "train_loss": 1.0}
        if acc is not None:
            rec["test_acc"] = acc
        rd.append_metrics(rec)
    rd.write_result(RunResult(status=status, name=name, test_acc=last, epochs=len(epochs),
                              seed=meta.get("seed", 0), meta=meta, wall_time_s=1.0))
    return rd.path


# Per method: (last-epoch accuracy, per-epoch accuracies) of three seeds.
RUNS = {
    "ce": [(72.1, [60.0, 72.9, 72.1]), (72.6, [61.0, 72.2, 72.6]), (71.8, [59.5, 72.4, 71.8])],
    "hinton_kl": [(73.2, [65.0, 73.9, 73.2]), (73.5, [64.0, None, 73.5]),
                  (73.0, [66.0, 74.1, 73.0])],
    "dkd": [(76.0, [70.0, 76.4, 76.0]), (76.4, [71.0, 76.2, 76.4]), (75.9, [69.0, 76.8, 75.9])],
}
SUPCON_KD = [(74.0, [66.0, 74.5, 74.0]), (74.4, [67.0, 74.6, 74.4])]


def _meta(method, seed, table="cifar100_kd", teacher="resnet32x4", student="resnet8x4",
          kind="ce", published="cifar100"):
    return {"table": table, "teacher_arch": teacher, "student_arch": student,
            "method": method, "teacher_kind": kind, "published": published, "seed": seed,
            "stage": "final", "cell": f"{teacher}_{student}_{method}"}


@pytest.fixture()
def bench(tmp_path):
    root = tmp_path / "runs"
    for method, runs in RUNS.items():
        for s, (last, epochs) in enumerate(runs):
            write_run(root, f"{method}-s{s}", _meta(method, s), last, epochs)
    for s, (last, epochs) in enumerate(SUPCON_KD):
        write_run(root, f"sup_kd-s{s}", _meta("hinton_kl", s, kind="supcon"), last, epochs)
    # A pair the READMEs do not have, and the ImageNet row.
    write_run(root, "odd-s0", _meta("hinton_kl", 0, teacher="resnet8", student="resnet8"),
              50.0, [49.0, 51.0, 50.0])
    for s, acc in enumerate((70.9, 71.2)):
        write_run(root, f"in_kd-s{s}", _meta("hinton_kl", s, "imagenet_kd", "resnet34",
                                             "resnet18", published="imagenet_kd"),
                  acc, [acc - 1, acc])
    return root


def _ms(v):
    return statistics.mean(v), statistics.stdev(v)


def _p(a, b):
    return st.ttest_ind(a, b, equal_var=False).pvalue


def _p_text(p):
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _last(method):
    return [r[0] for r in RUNS[method]]


def _best(method):
    return [max(a for a in r[1] if a is not None) for r in RUNS[method]]


def _rows(path):
    with open(path, newline="") as fh:
        return {(r["row"], r["col"], r["metric"]): r for r in csv.DictReader(fh)}


def test_best_epoch_is_the_max_per_epoch_test_accuracy(bench):
    rec = load_run(bench / "hinton_kl-s1")
    assert rec.test_acc == 73.5 and rec.best_test_acc == 73.5  # the unevaluated epoch skipped
    assert load_run(bench / "dkd-s2").best_test_acc == 76.8
    (bench / "dkd-s2" / "metrics.jsonl").unlink()
    assert load_run(bench / "dkd-s2").best_test_acc is None


def test_benchmark_cells_last_and_best_with_welch_against_kd(bench, tmp_path):
    rep = write_report(bench, tmp_path / "out")
    md = rep.tables["cifar100_kd"]
    for metric, values in (("last", _last), ("best", _best)):
        m, s = _ms(values("dkd"))
        p = _p(values("dkd"), values("hinton_kl"))
        assert f"{metric}: {m:.2f} ± {s:.2f} (n=3, p={_p_text(p)}" in md
        # KD itself is tested against the student trained alone.
        m, s = _ms(values("hinton_kl"))
        p = _p(values("hinton_kl"), values("ce"))
        assert f"{metric}: {m:.2f} ± {s:.2f} (n=3, p={_p_text(p)}" in md
        m, s = _ms(values("ce"))
        assert f"{metric}: {m:.2f} ± {s:.2f} (n=3)" in md  # no baseline: no test
    rows = _rows(tmp_path / "out" / "cifar100_kd.csv")
    for metric, values in (("last", _last), ("best", _best)):
        r = rows[("resnet32x4->resnet8x4", "dkd", metric)]
        m, s = _ms(values("dkd"))
        assert int(r["n"]) == 3
        assert float(r["mean"]) == pytest.approx(m, rel=1e-5)
        assert float(r["std"]) == pytest.approx(s, rel=1e-5)
        assert float(r["p_welch"]) == pytest.approx(_p(values("dkd"), values("hinton_kl")),
                                                    rel=1e-4)
        assert r["baseline"] == "cifar100_kd/resnet32x4->resnet8x4/hinton_kl"
    assert rows[("resnet32x4->resnet8x4", "hinton_kl", "last")]["paper"] == (
        "73.33 (RepDistiller), 73.33 (mdistiller)")
    assert rows[("resnet32x4->resnet8x4", "dkd", "best")]["paper"] == "76.32 (mdistiller)"
    assert rows[("resnet32x4->resnet8x4", "ce", "last")]["paper"] == "72.50 (RepDistiller)"


def test_benchmark_layout(bench, tmp_path):
    rep = write_report(bench, tmp_path / "out")
    md = rep.tables["cifar100_kd"]
    header = md.splitlines()[2]
    # Columns: the methods present, CE student first, then KD, then DKD; each with the
    # published numbers beside it.
    assert header == ("| Teacher → student | CE student (ours) | CE student (published) | "
                      "KD (ours) | KD (published) | DKD (ours) | DKD (published) |")
    lines = md.splitlines()
    row = next(ln for ln in lines if ln.startswith("| resnet32x4 → resnet8x4"))
    assert "(published teacher 79.42)" in row
    sup = next(ln for ln in lines if ln.startswith("| resnet32x4 (SupCon teacher) → resnet8x4"))
    m, s = _ms([r[0] for r in SUPCON_KD])
    assert f"last: {m:.2f} ± {s:.2f} (n=2)" in sup  # no CE student in that row: no test
    assert "RepDistiller" not in sup  # the literature has no SupCon teachers
    # Declared pairs first (in the README order), the unknown pair after them.
    assert lines.index(row) < lines.index(sup) < next(
        i for i, ln in enumerate(lines) if ln.startswith("| resnet8 → resnet8"))
    # Only rows with runs are shown (not the other 12 published pairs).
    assert "wrn_40_2" not in md
    assert "last epoch" in md and "best" in md and "a08d46f" in md and "dcc0432" in md
    im = rep.tables["imagenet_kd"]
    m, s = _ms([70.9, 71.2])
    assert f"| resnet34 → resnet18 | {m:.2f} ± {s:.2f}" not in im  # labelled, never bare
    assert f"last: {m:.2f} ± {s:.2f} (n=2)" in im and "71.03 (mdistiller)" in im


def test_benchmark_runs_stay_out_of_the_paper_tables(bench, tmp_path):
    rep = write_report(bench, tmp_path / "out")
    assert set(rep.tables) == {"cifar100_kd", "imagenet_kd"}
    # The paper tables' accuracy line stays; the benchmark's best epoch is said too.
    assert "best epoch" in rep.markdown_path.read_text()


def test_published_numbers_file_names_its_sources_and_the_pairs():
    data = yaml.safe_load(NUMBERS.read_text())
    for src in data["sources"].values():
        assert src["url"].startswith("https://github.com/")
        assert len(src["commit"]) == 40 and src["section"] and src["epoch"] in ("last", "best")
    pairs = {(p["teacher"], p["student"]) for p in data["cifar100"]["pairs"]}
    assert set(PAIRS) <= pairs
    for p in data["cifar100"]["pairs"] + data["imagenet_kd"]["pairs"]:
        for src in set(p) - {"teacher", "student"}:
            assert src in data["sources"]
            for method, v in p[src].items():
                assert v is None or 0 < v < 100, (p, method)
    # Spot checks against the READMEs (RepDistiller's tables 1-2, mdistiller's DKD section).
    by = {(p["teacher"], p["student"]): p for p in data["cifar100"]["pairs"]}
    assert by[("resnet32x4", "resnet8x4")]["repdistiller"]["crd"] == 75.51
    assert by[("wrn_40_2", "ShuffleV1")]["mdistiller"]["dkd"] == 76.70
    assert by[("wrn_40_2", "wrn_40_1")]["repdistiller"]["fsp"] is None  # N/A in the README
    im = {(p["teacher"], p["student"]): p for p in data["imagenet_kd"]["pairs"]}
    assert im[("resnet50", "MobileNetV1")]["mdistiller"] == {"hinton_kl": 70.50, "dkd": 72.05}


def test_arch_names_and_rows():
    assert arch_key("ResNet34") == arch_key("resnet34")
    assert arch_key("wrn-40-2") == arch_key("wrn_40_2")
    assert pair_row("a", "b") == "a->b" and pair_row("a", "b", "supcon") == "a->b@supcon"
    assert method_columns(["dkd", "zz_plugin", "ce", "hinton_kl", "crd", "dkd+x"]) == [
        "ce", "hinton_kl", "crd", "dkd", "dkd+x", "zz_plugin"]
    assert load_numbers("published_kd_benchmark.yaml")["sources"]["repdistiller"]["name"] == \
        "RepDistiller"


def test_the_registry_holds_every_table_once_in_report_order():
    from supkd.experiments.tables import report_order

    assert report_order() == ["table1", "table2", "table5", "table3", "table4", "cifar100_kd",
                              "imagenet_kd"]
    assert {"cifar100_kd", "imagenet_kd"} <= set(TABLES)
    with pytest.raises(ValueError, match="table1"):
        register_table(TABLES["table1"])


def test_a_new_table_is_one_registered_entry(tmp_path):
    # A table nobody wrote report code for: rows = data sets, one column, each row tested
    # against the digits row. Registered, it is rendered; removed, it is gone.
    spec = TableSpec(
        "by_data", "Table X: accuracy per data set", "dataset", ("digits", "other"),
        {"digits": "Digits", "other": "Other"}, None, ("acc",), {"acc": "Top-1"},
        lambda row, col: None if row == "digits" else ("by_data", "digits", col),
        "p: each data set vs digits")
    register_table(spec)
    try:
        root = tmp_path / "runs"
        vals = {"digits": [90.0, 91.0, 93.0], "other": [80.0, 82.0, 81.0]}
        for ds, accs in vals.items():
            for s, a in enumerate(accs):
                meta = {"table": "by_data", "dataset": ds, "seed": s, "method": "ce",
                        "student_arch": "x"}
                write_run(root, f"{ds}-s{s}", meta, a, [a])
        rep = write_report(root, tmp_path / "out")
        md = rep.tables["by_data"]
        m, s = _ms(vals["other"])
        p = _p(vals["other"], vals["digits"])
        assert f"| Other | {m:.2f} ± {s:.2f} (n=3, p={_p_text(p)}) |" in md
        assert md.startswith("### Table X") and "p: each data set vs digits" in md
        assert (tmp_path / "out" / "by_data.csv").is_file()
    finally:
        TABLES.remove("by_data")
    assert "by_data" not in write_report(root, tmp_path / "out2").tables


def test_diverged_and_failed_benchmark_runs(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "a-s0", _meta("dkd", 0), None, [10.0, None], status="diverged")
    write_run(root, "a-s1", _meta("dkd", 1), None, [10.0], status="failed")
    write_run(root, "a-s2", _meta("dkd", 2), 70.0, [71.0, 70.0])
    md = write_report(root, tmp_path / "out").tables["cifar100_kd"]
    # A diverged run's best epoch does not count either: only completed runs have values.
    assert "last: 70.00 (n=1); 1 diverged" in md and "best: 71.00 (n=1); 1 diverged" in md
    assert "1 failed" in md
    assert math.isfinite(load_run(root / "a-s0").best_test_acc)


def test_the_report_names_no_table():
    # Tables are data: the renderer has no branch on a table id (their ids live in the
    # modules that declare them).
    import ast

    import supkd.experiments.report as report

    tree = ast.parse(Path(report.__file__).read_text())
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                and isinstance(n.value, str)}
    assert not literals & set(TABLES), literals & set(TABLES)
