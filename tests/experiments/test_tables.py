"""Report tables as data: the registry the report iterates over, a table added as one entry,
the KD benchmark tables (last and best epoch, Welch p against KD, published numbers) from
runs written through RunDir/RunResult, the catch-all table "KD baselines beyond the paper",
and the paper's Tables I-V (placement, baselines, published numbers)."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats as st

from supkd.experiments.grid import load_grid, plan_grid
from supkd.experiments.report import write_report
from supkd.experiments.store import load_run
from supkd.experiments.tables import TABLES, TableSpec, register_table, tables_of
from supkd.experiments.tables.kd_benchmark import arch_key, method_columns, pair_row
from supkd.experiments.tables.paper import PAPER_NUMBERS, PLACEMENT_FLAGS, PLACEMENTS
from supkd.experiments.tables.spec import load_numbers
from supkd.losses import build_loss
from supkd.train.run_dir import RunDir, RunResult
from supkd.vocab import RunKind

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
                              "imagenet_kd", "beyond"]
    assert {"cifar100_kd", "imagenet_kd", "beyond"} <= set(TABLES)
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
        with open(tmp_path / "out" / "by_data.csv", newline="") as fh:
            other = {r["row"]: r for r in csv.DictReader(fh)}["other"]
        assert other["baseline"] == "by_data/digits/acc" and other["paper"] == ""  # none
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


# ------------------------------------------------- the table "KD baselines beyond the paper"
def test_beyond_is_a_table_spec_declared_as_data():
    # Its placement, columns, baseline rule and order are the spec's own, readable without
    # the report: the report renders it like Table I.
    spec = TABLES["beyond"]
    assert isinstance(spec, TableSpec) and spec.catch_all and spec.title.startswith("KD base")
    place = spec.place
    assert place({"table": "table2", "method": "dkd", "teacher_kind": "supcon"}) == (
        "dkd@table2", "supcon")
    assert place({"table": "table4", "method": "hinton_kl", "variant": "logit standardization",
                  "teacher_kind": "ce"}) == ("hinton_kl+logit standardization@table4", "ce")
    # The first named table that has a Baseline row; none named: no table, column "acc".
    assert place({"table": ["table5", "table1", "table4", "table2"], "method": "at",
                  "teacher_kind": "ce"}) == ("at@table4", "ce")
    assert place({"table": "table1", "method": "sp"}) == ("sp", "acc")
    assert place({"method": "cosine", "seed": 0}) == ("cosine", "acc")
    assert place({"table": "table2", "teacher_kind": "ce"}) is None  # no method: nowhere
    assert place({"method": ""}) is None
    # Baseline rule: the logit-MSE Baseline of the named table, same teacher column.
    assert spec.baseline("dkd@table2", "supcon") == ("table2", "logit_mse", "supcon")
    assert spec.baseline("hinton_kl+logit standardization@table4", "ce") == (
        "table4", "logit_mse", "ce")
    assert spec.baseline("dkd", "acc") is None
    assert spec.baseline("dkd@nonsense", "ce") is None
    # Rows in loss-registration order (then by name; an unknown loss last), columns: CE,
    # SupCon, no teacher kind, then any other kind by name.
    rows = ["zz_plugin@table2", "dkd@table4", "dkd", "hinton_kl+x@table2", "dkd@table2"]
    assert spec.shown_rows(rows) == ["hinton_kl+x@table2", "dkd", "dkd@table2", "dkd@table4",
                                     "zz_plugin@table2"]
    assert spec.columns(["vit", "acc", "supcon", "ce", "b"]) == ["ce", "supcon", "acc", "b",
                                                                 "vit"]
    assert spec.row_label("dkd+beta 2@table2") == "DKD (Zhao et al. 2022), beta 2"
    assert spec.row_label("zz_plugin") == "zz_plugin"
    assert [spec.col_label(c) for c in ("ce", "supcon", "acc", "vit")] == [
        "KD from CE teacher", "KD from SupCon teacher", "Top-1 accuracy", "KD from vit teacher"]
    (head, text), = spec.label_columns
    assert head == "p against the Baseline of"
    assert (text("dkd@table4"), text("dkd")) == ("Table IV", "–")
    assert spec.metrics == ("last",) and spec.published is None


def _kd_meta(method, seed, **extra):
    return {"method": method, "seed": seed, "student_arch": "resnet8", "stage": "final",
            **extra}


def test_the_catch_all_table_is_only_a_registry_entry(tmp_path):
    # Runs no named table places: a baseline from Table II's grid, a run naming the
    # catch-all table itself, and a run that names no table. The report shows them only
    # because a catch-all spec is registered: a second one takes the same runs, and with
    # none registered they are in no table.
    root = tmp_path / "runs"
    base = {"table": "table2", "teacher_kind": "supcon"}
    for s, acc in enumerate((90.0, 91.0)):
        write_run(root, f"mse-s{s}", _kd_meta("logit_mse", s, **base), acc, [acc])
    for s, acc in enumerate((95.0, 95.5)):
        write_run(root, f"dkd-s{s}", _kd_meta("dkd", s, **base), acc, [acc])
    write_run(root, "pkt-s0", _kd_meta("pkt", 0, table="beyond"), 80.0, [80.0])
    write_run(root, "crd-s0", _kd_meta("crd", 0), 70.0, [70.0])
    spec = TABLES["beyond"]
    rep = write_report(root, tmp_path / "out")
    assert list(rep.tables) == ["table2", "beyond"]
    m, s = _ms([95.0, 95.5])
    p = _p([95.0, 95.5], [90.0, 91.0])
    assert p < 0.05
    assert (f"| DKD (Zhao et al. 2022) | Table II | {m:.2f} ± {s:.2f} (n=2, p={_p_text(p)}) "
            "| – |") in rep.tables["beyond"]
    assert "| PKT (Passalis & Tefas 2018) | – | – | 80.00 (n=1) |" in rep.tables["beyond"]
    assert "| CRD (Tian et al. 2020) | – | – | 70.00 (n=1) |" in rep.tables["beyond"]
    other = TableSpec("leftovers", "Leftovers", "method", (), str, None, ("acc",),
                      {"acc": "Top-1"}, lambda r, c: None, "p: none", rows_from_runs=True,
                      catch_all=True, row_rule=lambda meta: meta.get("method"))
    register_table(other)
    try:
        rep = write_report(root, tmp_path / "out2")
        assert list(rep.tables) == ["table2", "leftovers", "beyond"]
        rows = [ln.split(" | ")[0] for ln in rep.tables["leftovers"].splitlines()[4:]
                if ln.startswith("| ")]
        assert rows == ["| crd", "| dkd", "| pkt"]
        TABLES.remove("beyond")
        rep = write_report(root, tmp_path / "out3")
        assert list(rep.tables) == ["table2", "leftovers"]
        TABLES.remove("leftovers")
        rep = write_report(root, tmp_path / "out4")
        assert list(rep.tables) == ["table2"] and "dkd" not in rep.tables["table2"]
        assert not (tmp_path / "out4" / "beyond.csv").exists()
    finally:
        TABLES.remove("leftovers")
        if "beyond" not in TABLES:
            register_table(spec)
    assert write_report(root, tmp_path / "out5").tables == write_report(
        root, tmp_path / "out").tables


# ------------------------------------------------------------------ the paper's Tables I-V
def test_the_published_numbers_file_keeps_its_nans():
    # Table V's diverged runs are NaN in the paper, not missing.
    t5 = load_numbers(PAPER_NUMBERS)["imagenet1k"]["table5"]
    assert math.isnan(t5["none"]) and math.isnan(t5["teacher_only"]) and t5["both"] == 73.70


def test_paper_published_cells():
    def cell(table, row, col):
        return TABLES[table].published_cell(row, col)
    assert cell("table1", "teacher", "supcon") == "94.02 ± 0.09"
    assert cell("table2", "supcon_kd", "supcon") == "94.45 ± 0.09"
    assert cell("table2", "gram", "ce") == "–"
    assert cell("table4", "logit_mse", "supcon") == "73.70 ± 0.11"
    assert cell("table5", "none", "acc") == "NaN"
    assert cell("table5", "student_only", "acc") == "74.08"
    assert cell("table2", "hinton_kl", "supcon") == "–"
    # Table V is published for ImageNet only: a CIFAR-10 block falls back to it.
    assert TABLES["table5"].published_cell("both", "acc", "cifar10") == "73.70"


def test_paper_placement_from_meta():
    meta = {"table": ["table2", "table5"], "method": "supcon_kd", "teacher_kind": "supcon",
            "placement": "student_only"}
    assert tables_of(meta) == ["table2", "table5"]
    assert TABLES["table2"].place(meta) == ("supcon_kd", "supcon")
    assert TABLES["table5"].place(meta) == ("student_only", "acc")
    assert TABLES["table1"].place({"role": "teacher"}) is None  # no column
    # A variant, or a loss without a KD-table row, is no row of Table II (strict rows).
    assert TABLES["table2"].place({**meta, "variant": "instance positives"}) is None
    assert TABLES["table2"].place({**meta, "method": "dkd"}) is None
    assert tables_of({"table": "nonsense"}) == []
    assert tables_of({}) == []


def test_paper_baselines():
    def base(table, row, col):
        return TABLES[table].baseline(row, col)
    assert base("table1", "student", "supcon") == ("table1", "student", "ce")
    assert base("table1", "student", "ce") is None
    assert base("table2", "gram", "supcon") == ("table2", "logit_mse", "supcon")
    assert base("table2", "logit_mse", "ce") == ("table1", "student", "ce")
    assert base("table4", "logit_mse", "ce") == ("table3", "student", "ce")
    assert base("table5", "both", "acc") == ("table5", "student_only", "acc")
    assert base("table5", "student_only", "acc") is None


@pytest.mark.parametrize("grid", ["configs/demo.yaml", "configs/paper/cifar10.yaml",
                                  "configs/paper/ablation.yaml", "configs/fast/cifar10.yaml"])
def test_table5_grids_normalize_as_their_placement_says(grid, tmp_path):
    # One rule (PLACEMENT_FLAGS, Table V's rows); the grids spell it out per entry.
    plan = plan_grid(load_grid(REPO / grid), tmp_path)
    seen = set()
    for r in plan:
        placement = r.config.get("meta", {}).get("placement")
        if placement is None or r.kind == RunKind.CKA:
            continue
        task = r.config["task"]
        loss = build_loss(task["loss"], **task.get("loss_args", {}))
        assert (loss.normalize_student, loss.normalize_teacher) == PLACEMENT_FLAGS[placement], (
            grid, r.name)
        seen.add(placement)
    assert seen == set(PLACEMENTS) == set(TABLES["table5"].row_order())
