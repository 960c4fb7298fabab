"""`c3exp summary` (c3exp/cli/summary.py): the per-stage table, its last line, and the paper's Table 1."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from c3exp.attention import ATTENTION_NAMES
from c3exp.config import group_choices
from c3exp.cli.summary import main
from c3exp.paper import TABLE1
from c3exp.utils.complexity import count_macs, count_params
from tests.conftest import assert_names_bad_setting, build, error_line


@pytest.mark.parametrize(
    "overrides,shape",
    [
        (["model=resnet56", "attn=c3"], (1, 3, 32, 32)),
        (["model=resnet20", "attn=cbam", "attn.placement=first_block", "data=cifar10"], (1, 3, 32, 32)),
        (["model=resnet18", "attn=se", "data=imagefolder", "data.num_classes=10"], (1, 3, 224, 224)),
    ],
)
def test_summary_last_line_matches_the_counters(overrides: list[str], shape, capsys):
    text = main(overrides)
    assert capsys.readouterr().out.strip() == text.strip()
    last = text.strip().splitlines()[-1]
    match = re.fullmatch(r"params=(\d+) macs=(\d+)", last)
    assert match, last
    model = build(*overrides)
    assert int(match[1]) == count_params(model)
    assert int(match[2]) == count_macs(model, shape)


def test_summary_table_has_every_part_and_the_total():
    text = main(["model=resnet20"])
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert list(rows) == ["part", "stem", "stage1", "stage2", "stage3", "head", "total"]
    assert "| 278,324 " in rows["total"] and "40,818,944" in rows["total"]


@pytest.mark.slow
def test_summary_cli_reports_user_errors_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "c3exp.summary", "model.depth=21"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert_names_bad_setting(result.stderr, "model.depth", 21)
    assert "6k+2" in result.stderr


def test_unknown_table_is_one_line(capsys):
    line = error_line(lambda: main(["table=paper2"]), capsys)
    assert_names_bad_setting(line, "table", "paper2")
    assert "paper, zoo" in line


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage(capsys, flag):
    main([flag])
    out = capsys.readouterr().out
    assert out.startswith("usage: c3exp summary [key=value ...]") and "example: " in out
    for group in ("model", "attn", "data"):  # every choice of the config folders, as they are now
        assert f"  {group}=NAME " in out and ", ".join(group_choices(group)) in out


# ----------------------------------------------------------------------------------------------
# Table 1: parameters (M, two decimals) and MACs against the paper's FLOPs (M), as in paper.md.


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model,attn", TABLE1, ids=["-".join(k) for k in TABLE1])
def test_table1_cell(model: str, attn: str):
    """Params round to the paper's figure; MACs within 3% (6% for C3, counted tiled as the paper does)."""
    params_m, flops_m, _ = TABLE1[model, attn]
    tiled = ("attn.options.resize=tile",) if attn == "c3" else ()
    net = build(f"model={model}", f"attn={attn}", "data=cifar100", *tiled)
    assert round(count_params(net) / 1e6, 2) == params_m
    tolerance = 0.06 if attn == "c3" else 0.03
    assert count_macs(net) / 1e6 == pytest.approx(flops_m, rel=tolerance)


# ----------------------------------------------------------------------------------------------
# table=paper


CELL = re.compile(r"(?P<ours>[\d.]+) / (?:(?P<paper>[\d.]+) \((?P<diff>[+-][\d.]+)%\)|-)")


@pytest.fixture(scope="module")
def paper_table() -> str:
    return main(["table=paper"])


def parse_tables(text: str) -> list[dict[str, dict[str, re.Match]]]:
    """The Markdown tables of the output: row label -> column header -> parsed cell."""
    tables, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = cells
            tables.append({})
        elif not set(line) <= set("|- "):
            tables[-1][cells[0]] = {column: CELL.fullmatch(cell) for column, cell in zip(header[1:], cells[1:])}
    return tables


@pytest.mark.slow
def test_paper_table_figures(paper_table: str):
    params, macs = parse_tables(paper_table)
    assert list(params) == list(macs) == ["ResNet-20", "ResNet-56", "ResNet-110", "Wide-ResNet"]
    assert params["ResNet-20"]["+ C3"].group(0) == "0.348 / 0.35 (-0.5%)"
    assert params["Wide-ResNet"]["baseline"].group(0) == "26.858 / 26.86 (-0.0%)"
    assert params["Wide-ResNet"]["+ SE"].group(0) == "27.261 / 27.26 (+0.0%)"
    assert macs["ResNet-20"]["baseline"].group(0) == "40.8 / 41.7 (-2.1%)"
    assert macs["ResNet-20"]["+ C3"].group(0) == "46.1 / 46.0 (+0.1%)"
    assert macs["ResNet-20"]["+ C3 (default attn=c3)"].group(0) == "41.4 / 46.0 (-9.9%)"
    assert macs["Wide-ResNet"]["+ C3"].group(0) == "3906.2 / 3870.0 (+0.9%)"


@pytest.mark.slow
def test_paper_table_every_cell_is_close(paper_table: str):
    params, macs = parse_tables(paper_table)
    for row in params.values():
        for column, cell in row.items():
            if column == "+ CBAM":
                assert cell["paper"] is None
            else:
                assert round(float(cell["ours"]), 2) == float(cell["paper"])
    for row in macs.values():
        for column, cell in row.items():
            if column == "+ CBAM":
                assert cell["paper"] is None
            elif column != "+ C3 (default attn=c3)":
                limit = 6.0 if column == "+ C3" else 3.0
                assert abs(float(cell["diff"])) < limit, (column, cell.group(0))


@pytest.mark.slow
def test_zoo_table_has_every_block_and_the_papers_resnet50_figures():
    text = main(["table=zoo"])
    params, macs = (
        {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[2:])}
        for table in (
            [line for line in part.splitlines() if line.startswith("|")]
            for part in text.split("MACs (M) per image")
        )
    )
    assert list(params) == list(ATTENTION_NAMES) and list(macs) == list(ATTENTION_NAMES)
    # ResNet-20/56/110 (CIFAR-100) and ResNet-50 (ImageNet) counts of the real builders
    assert params["none"][:3] == ["0.278", "0.862", "1.737"] and params["c3"][:3] == ["0.348", "0.932", "1.807"]
    assert params["cbam"][3] == "28.090 / 28.09 (-0.0%)" and params["triplet"][3] == "25.562 / 25.56 (+0.0%)"
    assert params["eca"][4] == "+86 / +80" and params["simam"][4] == "+0 / +0" and params["ge"][4] == "+0"
    assert params["se"][4] == "+5,029,888"  # reduction 8, the C3 paper's SE
    assert macs["none"][3] == "4089.2 / 3860 (+5.9%)" and macs["gc"][3].endswith("/ -")
    assert float(macs["nonlocal"][0]) > 1.9 * float(macs["none"][0])  # the 32x32 stage-1 blocks' HW x HW affinity
