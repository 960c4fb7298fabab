"""A report's table per task (TABLE_SPECS, c3exp/report/tables.py) over runs of several tasks: a section per task,
each with its own columns, the paper's figures, and curves of its primary metric.

No training: results.json files are written by hand, in the format c3exp.training.train writes them.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

import c3exp.report.output
from c3exp.cli.report import main as report
from c3exp.report.runs import collect_runs
from c3exp.results import PrimaryMetric


CLASSIFICATION_CSV = ("model", "data", "attn", "recipe", "params_m", "macs_m", "top1_mean", "top1_std", "seeds",
                      "best_in_row", "paper_params_m", "paper_macs_m", "paper_top1", "runs")


SEGMENTATION_METRICS = ("miou", "macc", "pixel_acc")


# (attn, seed) -> test mIoU, mean accuracy, pixel accuracy: c3 has the best mIoU, se the best pixel accuracy
SEGMENTATION_TESTS = {
    ("none", 0): (0.60, 0.70, 0.90), ("none", 1): (0.62, 0.71, 0.91),
    ("se", 0): (0.66, 0.74, 0.95), ("se", 1): (0.68, 0.75, 0.97),
    ("c3", 0): (0.70, 0.80, 0.92), ("c3", 1): (0.72, 0.82, 0.93), ("c3", 2): (0.75, 0.81, 0.94),
}


def write_results(run_dir: Path, **results: Any) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def classification_run(run_dir: Path, attn: str, seed: int, acc1: float, declared: bool = True) -> Path:
    """A classification results.json; declared=False: one from before tasks (no task, no primary_metric)."""
    task = {"task": "classification", "primary_metric": {"name": "val/acc1", "mode": "max"}} if declared else {}
    history = [{"epoch": 0, "val/acc1": acc1 / 2, "val/acc5": acc1}, {"epoch": 1, "val/acc1": acc1, "val/acc5": 1.0}]
    return write_results(run_dir, **task, model="resnet20", attn=attn, data="digits", seed=seed, params=270_000,
                         macs=41_000_000, max_epochs=2, test_acc1=acc1, test_acc5=1.0, test_loss=1.5,
                         test_ckpt="best", history=history)


def segmentation_run(run_dir: Path, attn: str, seed: int, data: str = "voc2012") -> Path:
    tests = dict(zip(SEGMENTATION_METRICS, SEGMENTATION_TESTS[attn, seed]))
    history = [{"epoch": 0, "train/loss": 2.0},  # an epoch without validation
               {"epoch": 1, **{f"val/{metric}": value / 2 for metric, value in tests.items()}},
               {"epoch": 2, **{f"val/{metric}": value for metric, value in tests.items()}}]
    return write_results(run_dir, task="segmentation", primary_metric={"name": "val/miou", "mode": "max"},
                         model="resnet101", attn=attn, data=data, seed=seed, params=42_500_000, macs=None,
                         max_epochs=3, task_name="train", best_epoch=2, test_loss=0.4, test_ckpt="best",
                         **{f"test_{metric}": value for metric, value in tests.items()},
                         **{f"best_val_{metric}": value for metric, value in tests.items()}, history=history)


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Classification on digits (2 seeds x none/c3), segmentation on VOC 2012 (none/se/c3) and on shapes (c3)."""
    runs = tmp_path / "runs"
    for seed in (0, 1):
        classification_run(runs / f"cls_none_{seed}", "none", seed, 0.80 + seed / 100)
        classification_run(runs / f"cls_c3_{seed}", "c3", seed, 0.85 + seed / 100)
    for attn, seed in SEGMENTATION_TESTS:
        segmentation_run(runs / f"seg_{attn}_{seed}", attn, seed)
    segmentation_run(runs / "shapes_c3_0", "c3", 0, data="shapes")
    return runs


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open() as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def row_of(rows: list[dict[str, str]], data: str, attn: str) -> dict[str, str]:
    return next(row for row in rows if (row["data"], row["attn"]) == (data, attn))


def table_lines(markdown: str, heading: str) -> list[str]:
    """The table lines of one section of report.md."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def cell_text(lines: list[str], data: str, header: str) -> str:
    """One cell of a Markdown table: the line of `data`, the column `header`."""
    headers = [text.strip() for text in lines[0].strip("|").split("|")]
    line = next(line for line in lines[2:] if f"| {data} " in line)
    return [text.strip() for text in line.strip("|").split("|")][headers.index(header)]


@pytest.fixture
def written(mixed, tmp_path) -> dict[str, Path]:
    return report([str(mixed), f"out={tmp_path / 'report'}"])


def test_a_mixed_directory_gives_a_section_per_task(written):
    markdown = written["markdown"].read_text()
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == ["## Classification (Table 1 layout)", "## Segmentation (Table 3 left layout)"]
    assert "12 runs from" in markdown  # 4 classification, 7 + 1 segmentation
    classification = table_lines(markdown, "Classification (Table 1 layout)")
    assert [text.strip() for text in classification[0].split("|")[3:7]] == [
        "none params (M)", "none MACs (M)", "none top-1 (%)", "none seeds"]
    assert "mean IoU" not in "".join(classification)
    segmentation = table_lines(markdown, "Segmentation (Table 3 left layout)")
    assert [text.strip() for text in segmentation[0].split("|")[3:8]] == [
        "none params (M)", "none mean IoU (%)", "none mean acc (%)", "none pixel acc (%)", "none seeds"]
    assert "top-1" not in "".join(segmentation) and "MACs" not in "".join(segmentation)


def test_segmentation_means_and_stds_over_seeds(written):
    """c3 on VOC: mIoU 70, 72, 75 %: mean 72.333, sample std sqrt(((-7/3)^2 + (-1/3)^2 + (8/3)^2) / 2) = 2.5166."""
    _, rows = read_csv(written["csv"])
    c3 = row_of(rows, "voc2012", "c3")
    assert int(c3["seeds"]) == 3
    assert float(c3["miou_mean"]) == pytest.approx(72.333333, abs=1e-5)
    assert float(c3["miou_std"]) == pytest.approx(2.516611, abs=1e-5)
    assert float(c3["macc_mean"]) == pytest.approx(81.0)  # 80, 82, 81: std 1
    assert float(c3["macc_std"]) == pytest.approx(1.0)
    none = row_of(rows, "voc2012", "none")  # two seeds: std = |a - b| / sqrt(2)
    assert float(none["pixel_acc_mean"]) == pytest.approx(90.5)
    assert float(none["pixel_acc_std"]) == pytest.approx(1 / 2 ** 0.5)
    assert float(none["params_m"]) == pytest.approx(42.5)
    lines = table_lines(written["markdown"].read_text(), "Segmentation (Table 3 left layout)")
    assert cell_text(lines, "voc2012", "c3 mean IoU (%)") == "**72.33 ± 2.52** (paper 75.1)"
    assert cell_text(lines, "voc2012", "none pixel acc (%)") == "90.50 ± 0.71"
    assert cell_text(lines, "shapes", "c3 mean IoU (%)") == "**70.00 ± -**"  # one seed, alone in its row


def test_bold_marks_the_best_mean_iou_not_the_best_pixel_accuracy(written):
    _, rows = read_csv(written["csv"])
    assert {row["attn"] for row in rows if row["data"] == "voc2012" and row["best_in_row"] == "True"} == {"c3"}
    lines = table_lines(written["markdown"].read_text(), "Segmentation (Table 3 left layout)")
    voc = next(line for line in lines if "| voc2012 " in line)
    assert voc.count("**") == 2
    assert not cell_text(lines, "voc2012", "se pixel acc (%)").startswith("**")  # se's 96 % is the row's best


def test_paper_values_only_for_voc2012(written):
    lines = table_lines(written["markdown"].read_text(), "Segmentation (Table 3 left layout)")
    assert cell_text(lines, "voc2012", "none mean IoU (%)") == "61.00 ± 1.41"  # illegible in the paper: no value
    assert cell_text(lines, "voc2012", "none mean acc (%)") == "70.50 ± 0.71 (paper 85.3)"
    assert cell_text(lines, "voc2012", "se mean IoU (%)").endswith("(paper 75.6)")
    assert cell_text(lines, "voc2012", "c3 mean acc (%)").endswith("(paper 86)")
    assert "(paper" not in cell_text(lines, "voc2012", "c3 pixel acc (%)")
    assert "(paper" not in next(line for line in lines if "| shapes " in line)
    _, rows = read_csv(written["csv"])
    papers = {(row["data"], row["attn"]): (row["paper_miou"], row["paper_macc"]) for row in rows
              if row["task"] == "segmentation"}
    assert papers == {("voc2012", "none"): ("", "85.3"), ("voc2012", "se"): ("75.6", "85.6"),
                      ("voc2012", "c3"): ("75.1", "86.0"), ("shapes", "c3"): ("", "")}


def test_the_csv_has_each_tasks_columns_and_a_task_column(written):
    columns, rows = read_csv(written["csv"])
    assert columns == ["task", "model", "data", "attn", "recipe", "params_m", "macs_m", "top1_mean", "top1_std",
                       "miou_mean", "miou_std", "macc_mean", "macc_std", "pixel_acc_mean", "pixel_acc_std",
                       "seeds", "best_in_row", "paper_params_m", "paper_macs_m", "paper_top1", "paper_miou",
                       "paper_macc", "runs"]
    digits = row_of(rows, "digits", "c3")
    assert digits["task"] == "classification" and digits["miou_mean"] == ""
    assert float(digits["top1_mean"]) == pytest.approx(85.5)
    voc = row_of(rows, "voc2012", "se")
    assert voc["task"] == "segmentation" and voc["top1_mean"] == "" and voc["macs_m"] == ""


def test_an_old_results_file_is_classification(tmp_path):
    for seed in (0, 1):
        classification_run(tmp_path / f"old_{seed}", "c3", seed, 0.7 + seed / 10, declared=False)
    run = collect_runs(tmp_path)[0]
    assert (run.task, run.primary) == ("classification", PrimaryMetric("val/acc1", "max"))
    assert run.test_metrics == {"acc1": 0.7, "acc5": 1.0}  # test_loss and test_ckpt are not metrics
    assert run.curve == ((0, 0.35), (1, 0.7))
    written = report([str(tmp_path)])
    columns, rows = read_csv(written["csv"])
    assert tuple(columns) == CLASSIFICATION_CSV  # one task: exactly its own columns, no task column
    assert float(rows[0]["top1_mean"]) == pytest.approx(75.0)
    assert "## Classification (Table 1 layout)" in written["markdown"].read_text()
    assert (tmp_path / "curves_resnet20_digits.png").is_file()


def test_curves_of_the_primary_metric_per_segmentation_row(mixed, tmp_path, monkeypatch):
    drawn: dict[str, tuple] = {}

    def record(bands, title, path, **options):
        drawn[Path(path).name] = (bands, title, options)
        Path(path).write_bytes(b"a PNG")
        return Path(path)

    monkeypatch.setattr(c3exp.report.output, "accuracy_curves", record)
    written = report([str(mixed), f"out={tmp_path / 'report'}"])
    assert set(drawn) == {"curves_resnet20_digits.png", "curves_segmentation_resnet101_voc2012.png",
                          "curves_segmentation_resnet101_shapes.png"}
    bands, title, options = drawn["curves_segmentation_resnet101_voc2012.png"]
    assert title == "resnet101 on voc2012: validation mean IoU"
    assert options == {"ylabel": "validation mean IoU (%)"}
    assert drawn["curves_resnet20_digits.png"][2] == {"ylabel": "validation top-1 accuracy (%)"}
    assert list(bands["c3"].x) == [1, 2]  # epoch 0 had no validation
    assert bands["c3"].mean[-1] == pytest.approx(72.333333, abs=1e-5) and bands["c3"].runs == 3
    assert "](curves_segmentation_resnet101_voc2012.png)" in written["markdown"].read_text()


def test_segmentation_curve_png_is_written(tmp_path):
    for attn, seed in (("none", 0), ("c3", 0), ("c3", 1)):
        segmentation_run(tmp_path / f"{attn}_{seed}", attn, seed)
    written = report([str(tmp_path)])
    png = tmp_path / "curves_segmentation_resnet101_voc2012.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written["curves_segmentation_resnet101_voc2012"] == png
    assert not (tmp_path / "curves_resnet101_voc2012.png").exists()


def test_debug_and_rerun_rules_apply_to_segmentation(tmp_path):
    segmentation_run(tmp_path / "a", "c3", 0)
    segmentation_run(tmp_path / "b_rerun", "c3", 0)
    write_results(tmp_path / "debug", **{**json.loads((tmp_path / "a" / "results.json").read_text()),
                                         "task_name": "debug", "seed": 1})
    markdown = report([str(tmp_path)])["markdown"].read_text()
    assert "Skipped 1 debug run (1 task_name=debug)" in markdown
    assert "resnet101 / voc2012 / c3: 2 runs with seed 0; kept the most recent" in markdown


def test_a_task_without_a_spec_gets_a_table_of_its_declared_metrics(tmp_path):
    write_results(tmp_path / "kp", task="keypoints", primary_metric={"name": "val/oks_ap", "mode": "max"},
                  model="resnet50", attn="c3", data="mpii", seed=0, params=1_000_000, test_oks_ap=0.75,
                  test_pck=0.45, test_loss=0.9, history=[{"epoch": 0, "val/oks_ap": 0.7}])
    written = report([str(tmp_path)])
    lines = table_lines(written["markdown"].read_text(), "Keypoints")
    assert cell_text(lines, "mpii", "c3 oks_ap (%)") == "**75.00 ± -**"
    assert cell_text(lines, "mpii", "c3 pck (%)") == "45.00 ± -"
    assert (tmp_path / "curves_keypoints_resnet50_mpii.png").is_file()


def detection_run(run_dir: Path, attn: str, data: str, map50: float, map_: float) -> Path:
    primary = {"name": "val/map_50" if data != "coco2017" else "val/map", "mode": "max"}
    tests = {"map_50": map50, "map": map_, "map_75": map_ / 2, "ap50_cat": map50}
    return write_results(run_dir, task="detection", primary_metric=primary, model="resnet50", attn=attn, data=data,
                         seed=0, params=41_000_000, macs=None, max_epochs=1, task_name="train", test_ckpt="last",
                         **{f"test_{metric}": value for metric, value in tests.items()},
                         history=[{"epoch": 0, **{f"val/{metric}": value for metric, value in tests.items()}}])


def test_detection_gets_the_table3_right_layout_with_the_papers_figure_of_its_data(tmp_path):
    runs = tmp_path / "runs"
    for attn, map50, map_ in (("none", 0.70, 0.40), ("se", 0.74, 0.38), ("c3", 0.72, 0.41)):
        detection_run(runs / f"voc_{attn}", attn, "voc2007", map50, map_)
        detection_run(runs / f"coco_{attn}", attn, "coco2017", map50 - 0.2, map_ - 0.1)
    written = report([str(runs), f"out={tmp_path / 'report'}"])
    lines = table_lines(written["markdown"].read_text(), "Detection (Table 3 right layout)")
    assert cell_text(lines, "voc2007", "none mAP@0.5 (%)") == "70.00 ± - (paper 74.6)"
    assert cell_text(lines, "voc2007", "se mAP@0.5 (%)") == "**74.00 ± -** (paper 74.8)"  # the row's best mAP@0.5
    assert cell_text(lines, "voc2007", "c3 mAP (%)") == "41.00 ± -"  # the paper's COCO figure is not VOC's
    assert cell_text(lines, "coco2017", "c3 mAP (%)") == "31.00 ± - (paper 34.8)"
    assert "(paper" not in cell_text(lines, "coco2017", "c3 mAP@0.5 (%)")
    _, rows = read_csv(written["csv"])
    assert {(row["data"], row["attn"]): (row["paper_map50"], row["paper_map"]) for row in rows} == {
        ("voc2007", "none"): ("74.6", ""), ("voc2007", "se"): ("74.8", ""), ("voc2007", "c3"): ("75.6", ""),
        ("coco2017", "none"): ("", "33.9"), ("coco2017", "se"): ("", "34.3"), ("coco2017", "c3"): ("", "34.8")}


def test_a_sweep_over_the_whole_zoo_is_one_table_with_a_row_per_block(tmp_path):
    """More than four blocks: a row per (model, data, attn), the best top-1 in bold, the blocks' ImageNet figures."""
    attns = ("none", "se", "cbam", "c3", "eca", "gc", "coord", "srm", "ge", "triplet", "simam", "nonlocal")
    for rank, attn in enumerate(attns):
        for seed in (0, 1):
            write_results(tmp_path / "runs" / f"{attn}_{seed}", task="classification",
                          primary_metric={"name": "val/acc1", "mode": "max"}, model="resnet50", attn=attn,
                          data="imagenet", seed=seed, params=25_557_032 + rank, macs=4_089_000_000, max_epochs=1,
                          test_acc1=0.70 + rank / 1000 + seed / 100, test_ckpt="best", history=[])
    markdown = report([str(tmp_path / "runs"), f"out={tmp_path / 'report'}"])["markdown"].read_text()
    lines = table_lines(markdown, "Classification (Table 1 layout)")
    headers = [text.strip() for text in lines[0].strip("|").split("|")]
    assert headers == ["model", "data", "attn", "params (M)", "MACs (M)", "top-1 (%)", "seeds"]
    rows = {cells[2]: cells for cells in ([t.strip() for t in line.strip("|").split("|")] for line in lines[2:])}
    assert list(rows) == list(attns)  # the paper's blocks in its order, then the zoo in the registry's
    assert rows["nonlocal"][5] == "**71.60 ± 0.71**" and rows["none"][5] == "70.50 ± 0.71"
    assert rows["eca"][5] == "70.90 ± 0.71 (paper 77.48)" and rows["eca"][3] == "25.557 (paper 25.56)"
    assert rows["simam"][5].endswith("(paper 77.45)") and rows["gc"][5] == "71.00 ± 0.71"
    assert all(row[6] == "2" for row in rows.values())
