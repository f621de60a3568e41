"""report: tables from run directories the test writes; known values -> known cells."""

from __future__ import annotations

import csv
import math

import pytest
from scipy import stats as st

from supkd.cli import main
from supkd.experiments.report import write_report

from .fakeruns import write_run

CE_STUDENT = [90.0, 91.0, 92.0]
SUPCON_STUDENT = [93.0, 93.5, 94.5]
KD_BASE_SUP = [92.0, 92.5, 93.1]
KD_SUPCON = [92.1, 92.6, 93.0]
ABL_BOTH = [80.0, 81.0]


def _welch_p(a, b):
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return 2 * st.t.sf(abs((ma - mb) / math.sqrt(se2)), df)


def _mean_std(v):
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def _p_text(p):
    return "<0.001" if p < 0.001 else f"{p:.3f}"


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "runs"
    t1 = {"table": "table1", "stage": "final", "published": "cifar10"}
    for s, acc in enumerate(CE_STUDENT):
        write_run(root, f"ce_student-s{s}", {**t1, "role": "student", "kind": "ce", "seed": s},
                  test_acc=acc)
    for s, acc in enumerate(SUPCON_STUDENT):
        write_run(root, f"supcon_student-s{s}",
                  {**t1, "role": "student", "kind": "supcon", "seed": s}, test_acc=acc)
    kd = {"table": "table2", "stage": "final", "teacher_kind": "supcon", "published": "cifar10"}
    for s, acc in enumerate(KD_BASE_SUP):
        write_run(root, f"kd_logit_mse-s{s}",
                  {**kd, "method": "logit_mse", "seed": s, "alpha": 1.0,
                   "cell": "kd_logit_mse", "alpha_candidates": [0.5, 1.0]}, test_acc=acc)
    for s, acc in enumerate(KD_SUPCON):
        write_run(root, f"kd_supcon_kd-s{s}",
                  {**kd, "table": ["table2", "table5"], "method": "supcon_kd",
                   "placement": "student_only", "seed": s, "alpha": 1.0}, test_acc=acc)
    # alpha tuning of logit_mse: 0.5 -> 70, 1.0 -> 75 on validation
    for a, v in ((0.5, 70.0), (1.0, 75.0)):
        write_run(root, f"kd_logit_mse-tune-a{a}-s0",
                  {**kd, "method": "logit_mse", "seed": 0, "alpha": a, "stage": "tune",
                   "cell": "kd_logit_mse"}, val_acc=v, test_acc=None)
    ab = {"table": "table5", "stage": "final", "method": "supcon_kd"}
    for s in range(2):
        write_run(root, f"abl_none-s{s}", {**ab, "placement": "none", "seed": s},
                  status="diverged", diverged_step=[12, 5][s])
        write_run(root, f"abl_both-s{s}", {**ab, "placement": "both", "seed": s},
                  test_acc=ABL_BOTH[s])
    write_run(root, "abl_teacher_only-s0", {**ab, "placement": "teacher_only", "seed": 0},
              status=None)  # interrupted
    write_run(root, "abl_teacher_only-s1", {**ab, "placement": "teacher_only", "seed": 1},
              status="failed")
    return root


def _rows(path):
    with open(path, newline="") as fh:
        return {(r["row"], r["col"]): r for r in csv.DictReader(fh)}


def test_table_cells_known_values(runs, tmp_path):
    rep = write_report(runs, tmp_path / "out")
    md = rep.markdown_path.read_text()
    m, s = _mean_std(SUPCON_STUDENT)
    p = _welch_p(SUPCON_STUDENT, CE_STUDENT)
    assert f"{m:.2f} ± {s:.2f} (n=3, p={_p_text(p)}" in rep.tables["table1"]
    ce_m, ce_s = _mean_std(CE_STUDENT)
    assert f"{ce_m:.2f} ± {ce_s:.2f} (n=3) |" in rep.tables["table1"]  # baseline: no test
    assert "93.29 ± 0.21" in rep.tables["table1"]  # the paper's column
    # Table II: supcon_kd vs the logit-MSE baseline of the same column is far from
    # significant with these numbers -> marked ns
    p2 = _welch_p(KD_SUPCON, KD_BASE_SUP)
    assert p2 > 0.05
    km, ks = _mean_std(KD_SUPCON)
    assert f"{km:.2f} ± {ks:.2f} (n=3, p={_p_text(p2)}, ns)" in rep.tables["table2"]
    p3 = _welch_p(KD_BASE_SUP, CE_STUDENT)
    assert f"p={_p_text(p3)}" in rep.tables["table2"]
    assert "Student without KD" in rep.tables["table2"]
    assert "94.45 ± 0.09" in rep.tables["table2"]
    # Table V: diverged runs, failed and unfinished ones, and the student_only default
    t5 = rep.tables["table5"]
    assert "NaN (diverged at steps 5, 12)" in t5
    assert "failed (1 run); 1 unfinished" in t5
    pb = _welch_p(ABL_BOTH, KD_SUPCON)
    assert f"80.50 ± 0.71 (n=2, p={_p_text(pb)}" in t5
    assert "74.08" in t5 and "73.70" in t5
    for t in ("table1", "table2", "table5"):
        assert (tmp_path / "out" / f"{t}.csv").is_file()
    assert "## Setup" in md and "torch 2.x" in md and "cpu" in md
    assert "Runs that did not complete" in md and "abl_teacher_only-s0" in md
    assert "not as a like-for-like comparison" in md  # digits vs the paper's CIFAR-10


def test_csv_numbers(runs, tmp_path):
    write_report(runs, tmp_path / "out")
    t1 = _rows(tmp_path / "out" / "table1.csv")
    r = t1[("student", "supcon")]
    m, s = _mean_std(SUPCON_STUDENT)
    assert float(r["mean"]) == pytest.approx(m, rel=1e-5)
    assert float(r["std"]) == pytest.approx(s, rel=1e-5)
    assert int(r["n"]) == 3
    assert float(r["p_welch"]) == pytest.approx(_welch_p(SUPCON_STUDENT, CE_STUDENT), rel=1e-4)
    assert r["baseline"] == "table1/student/ce"
    assert r["paper"] == "93.29 ± 0.21"
    t5 = _rows(tmp_path / "out" / "table5.csv")
    assert t5[("none", "acc")]["diverged"] == "2" and t5[("none", "acc")]["mean"] == ""
    assert t5[("teacher_only", "acc")]["unfinished"] == "1"
    t2 = _rows(tmp_path / "out" / "table2.csv")
    assert t2[("supcon_kd", "supcon")]["significant_0.05"] == "False"


def test_alpha_section(runs, tmp_path):
    rep = write_report(runs, tmp_path / "out")
    md = rep.markdown_path.read_text()
    assert "α=0.5: 70.00, α=1: 75.00" in md
    with open(tmp_path / "out" / "alpha.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    chosen = [r["alpha"] for r in rows if r["chosen"] == "True"]
    assert chosen == ["1"]
    assert "differs" not in md


def test_tune_runs_stay_out_of_the_tables(runs, tmp_path):
    rep = write_report(runs, tmp_path / "out")
    t2 = _rows(tmp_path / "out" / "table2.csv")
    assert int(t2[("logit_mse", "supcon")]["n"]) == 3  # the two tune runs are not counted
    assert "75.00 ±" not in rep.tables["table2"]


def test_figures_embedded_relative(runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    png = out / "fig2_cka.png"
    png.write_bytes(b"\x89PNG")
    rep = write_report(runs, out, figures={"Fig. 2: CKA": png})
    assert "![Fig. 2: CKA](fig2_cka.png)" in rep.markdown_path.read_text()


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    rep = write_report(tmp_path / "empty")
    assert "nothing to tabulate" in rep.markdown_path.read_text()
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_cli_report(runs, tmp_path, capsys):
    assert main(["report", str(runs), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "report.md" in out and "Table I" in out
    assert (tmp_path / "cli" / "report.md").is_file()


def test_fig2_from_cka_files(runs, tmp_path):
    import json

    for s, (a, b) in enumerate(((0.9, 0.4), (0.8, 0.6))):
        (runs / f"kd_supcon_kd-s{s}" / "cka.json").write_text(json.dumps({
            "stages_a": ["layer1", "layer4"], "diagonal": {"layer1": a, "layer4": b},
            "sanity": {"layer1": 1.0, "layer4": 1.0}}))
    (runs / "kd_logit_mse-s0" / "cka.json").write_text("{broken")  # ignored, not fatal
    rep = write_report(runs, tmp_path / "out")
    md = rep.markdown_path.read_text()
    png = tmp_path / "out" / "fig2_cka.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert "![Fig. 2: layer-wise CKA](fig2_cka.png)" in md
    assert "| supcon_kd | 2 | 0.850 ± 0.071 | 0.500 ± 0.141 |" in md
    with open(tmp_path / "out" / "fig2_cka.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["stage"], r["n"]) for r in rows] == [
        ("supcon_kd", "layer1", "2"), ("supcon_kd", "layer4", "2")]
    assert float(rows[1]["std"]) == pytest.approx(math.sqrt(0.02), rel=1e-5)


def test_report_out_under_a_file_is_a_user_error(tmp_path, capsys):
    # A folder can never be made under a regular file (root ignores permission bits, so this
    # is the unwritable --out that also fails in CI containers).
    write_run(tmp_path / "runs", "t-s0", {"table": "table1", "role": "teacher", "kind": "ce",
                                          "seed": 0}, test_acc=90.0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from supkd.errors import UserError

    with pytest.raises(UserError, match=r"folder .*file/rep: cannot be created under the file"):
        write_report(tmp_path / "runs", blocker / "rep")
    assert main(["report", str(tmp_path / "runs"), "--out", str(blocker / "rep")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(blocker / "rep") in err


def test_report_names_loss_arguments(tmp_path):
    # A row-normalized Gram is not the raw Gram of Eq. 4: the report must say which was run.
    meta = {"table": "table2", "method": "gram", "teacher_kind": "supcon", "cell": "kd_gram"}
    for s in (0, 1):
        write_run(tmp_path / "runs", f"kd_gram-s{s}", {**meta, "seed": s}, test_acc=90.0 + s,
                  config={"task": {"name": "distill", "loss": "gram",
                                   "loss_args": {"normalize": True}}})
    md = write_report(tmp_path / "runs").markdown_path.read_text()
    assert "Loss arguments set by the grid" in md
    assert "kd_gram: `gram` normalize=True." in md


# ------------------------------------------------------------ KD baselines beyond the paper
MY_LOSS = [91.0, 92.5, 93.0]
PLAIN = [60.0, 62.0]


@pytest.fixture()
def throwaway_loss():
    """Register a loss for one test only, and forget it afterwards."""
    from supkd.losses import LOSSES, KDLoss, register_loss

    names: list[str] = []

    def register(name: str, **attrs):
        cls = type(f"Throwaway_{name}", (KDLoss,), {
            "compute": lambda self, s, t, y: (t - s).abs().mean(), **attrs})
        names.append(name)
        return register_loss(name)(cls)

    yield register
    for name in names:
        LOSSES.remove(name)


def _beyond_runs(root):
    kd = {"table": "table2", "stage": "final", "teacher_kind": "supcon", "published": "cifar10"}
    for s, acc in enumerate(MY_LOSS):
        write_run(root, f"kd_my_l1-s{s}", {**kd, "method": "my_l1", "seed": s}, test_acc=acc)
    # A plain `supkd train` distill run: no meta at all, its method is its task.loss.
    for s, acc in enumerate(PLAIN):
        write_run(root, f"plain-s{s}", {"seed": s}, test_acc=acc,
                  config={"task": {"name": "distill", "loss": "cosine"}})


def test_a_method_without_a_row_gets_the_extra_table(runs, tmp_path):
    _beyond_runs(runs)
    rep = write_report(runs, tmp_path / "out")
    beyond = rep.tables["beyond"]
    assert beyond.startswith("### KD baselines beyond the paper")
    # Not registered in this process: the bare name; tested against Table II's Baseline.
    m, s = _mean_std(MY_LOSS)
    p = _welch_p(MY_LOSS, KD_BASE_SUP)
    assert f"| my_l1 | Table II | {m:.2f} ± {s:.2f} (n=3, p={_p_text(p)}" in beyond
    pm, ps = _mean_std(PLAIN)
    assert f"| Cosine KD (Eq. 3) | – | – | {pm:.2f} ± {ps:.2f} (n=2) |" in beyond
    assert "my_l1" not in rep.tables["table2"]
    assert "my_l1" not in (tmp_path / "out" / "table2.csv").read_text()
    rows = _rows(tmp_path / "out" / "beyond.csv")
    mine = rows[("my_l1@table2", "supcon")]
    assert int(mine["n"]) == 3 and float(mine["mean"]) == pytest.approx(m)
    assert mine["baseline"] == "table2/logit_mse/supcon"
    assert float(mine["p_welch"]) == pytest.approx(p, rel=1e-4)
    assert rows[("cosine", "acc")]["baseline"] == ""
    assert "KD baselines beyond the paper" in rep.markdown_path.read_text()


DKD_RUNS = [93.0, 93.4, 92.9]
HINTON_LS = [92.4, 92.2, 92.9]
HINTON = [91.0, 91.5]


def test_kd_baselines_and_loss_variants_get_their_own_rows(runs, tmp_path):
    # The baselines grid's meta: a baseline loss (no Table II row) and a variant of a loss
    # that has one (hinton_kl with logit standardization): both land in the extra table,
    # tested against Table II's logit-MSE Baseline; the plain hinton_kl stays in Table II.
    kd = {"table": "table2", "stage": "final", "teacher_kind": "supcon", "published": "cifar10"}
    for s, acc in enumerate(DKD_RUNS):
        write_run(runs, f"base_dkd-s{s}", {**kd, "method": "dkd", "seed": s}, test_acc=acc)
    for s, acc in enumerate(HINTON_LS):
        write_run(runs, f"base_kd_ls-s{s}", {**kd, "method": "hinton_kl", "seed": s,
                                               "variant": "logit standardization"},
                  test_acc=acc)
    for s, acc in enumerate(HINTON):
        write_run(runs, f"kd_hinton_kl-s{s}", {**kd, "method": "hinton_kl", "seed": s},
                  test_acc=acc)
    rep = write_report(runs, tmp_path / "out")
    beyond = rep.tables["beyond"]
    for label, values in (("DKD (Zhao et al. 2022)", DKD_RUNS),
                          ("Hinton KD (KL, T=4; not in the paper), logit standardization",
                           HINTON_LS)):
        m, sd = _mean_std(values)
        p = _p_text(_welch_p(values, KD_BASE_SUP))
        assert f"| {label} | Table II | {m:.2f} ± {sd:.2f} (n=3, p={p}" in beyond, beyond
    assert "logit standardization" not in rep.tables["table2"]
    m, sd = _mean_std(HINTON)
    assert f"{m:.2f} ± {sd:.2f} (n=2" in rep.tables["table2"]
    rows = _rows(tmp_path / "out" / "beyond.csv")
    assert ("hinton_kl+logit standardization@table2", "supcon") in rows
    assert rows[("dkd@table2", "supcon")]["baseline"] == "table2/logit_mse/supcon"
    # Row order: registration order of the losses (hinton_kl before dkd).
    assert beyond.index("Hinton KD") < beyond.index("DKD")


def test_no_extra_table_when_every_method_has_a_row(runs, tmp_path):
    rep = write_report(runs, tmp_path / "out")
    assert "beyond" not in rep.tables
    assert not (tmp_path / "out" / "beyond.csv").exists()


def test_labels_come_from_the_loss_metadata(runs, tmp_path, throwaway_loss):
    throwaway_loss("my_l1", label="L1 KD (Eq. 9)")
    _beyond_runs(runs)
    rep = write_report(runs, tmp_path / "out")
    assert "| L1 KD (Eq. 9) | Table II |" in rep.tables["beyond"]
    # A loss that asks for a row of the KD tables gets one, labelled by its metadata.
    throwaway_loss("my_row", label="Row KD (Eq. 10)", kd_table_row=True)
    kd = {"table": "table2", "stage": "final", "teacher_kind": "supcon", "method": "my_row"}
    for s, acc in enumerate(MY_LOSS):
        write_run(runs, f"kd_my_row-s{s}", {**kd, "seed": s}, test_acc=acc)
    rep = write_report(runs, tmp_path / "out2")
    m, s = _mean_std(MY_LOSS)
    assert f"| Row KD (Eq. 10) | – | {m:.2f} ± {s:.2f} (n=3" in rep.tables["table2"]
    assert "Row KD" not in rep.tables["beyond"]
    # Built-in rows keep the labels the report always had.
    for label in ("Baseline (logit MSE, Eq. 1)", "SupConKD (Eq. 5)"):
        assert f"| {label} |" in rep.tables["table2"]
