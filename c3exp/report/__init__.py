"""The paper's tables and validation curves from your runs (the command: c3exp report, in c3exp/cli/report.py).

Each module imports only those before it: runs, wandb_runs, selection, specs, tables, plots, markdown, output.
Nothing is imported here, so that `c3exp report --help` does not wait for torch.
"""
