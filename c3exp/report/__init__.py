"""`python -m c3exp.report`: the paper's tables and validation curves from your runs (usage: cli.py).

One module per concern, each importing only those above it:
  runs.py        the Run record; reading results.json files and the configs saved beside them
  wandb_runs.py  the same Run records from the finished runs of a W&B project
  selection.py   which runs are pooled (no debug runs, one run per seed of one recipe), cells' labels, notes
  specs.py       what each task's table shows: columns, the bold metric, the paper's figures (TABLE_SPECS)
  tables.py      runs grouped into cells (recipe, block, varied settings) and rows, one table per task
  plots.py       the validation curves: mean ± std bands over seeds, one PNG per (model, data)
  markdown.py    the text of report.md
  output.py      report.csv, and write_report, which writes all the files
  cli.py         the command line
"""
from c3exp.report.cli import main
from c3exp.report.output import write_report
from c3exp.report.runs import Run, collect_runs, run_from_results
from c3exp.report.selection import Selection, select_runs
from c3exp.report.specs import TABLE_SPECS, TableSpec
from c3exp.report.tables import Cell, Table, build_tables
from c3exp.report.wandb_runs import collect_wandb_runs, run_from_wandb

__all__ = ["TABLE_SPECS", "Cell", "Run", "Selection", "Table", "TableSpec", "build_tables", "collect_runs",
           "collect_wandb_runs", "main", "run_from_results", "run_from_wandb", "select_runs", "write_report"]
