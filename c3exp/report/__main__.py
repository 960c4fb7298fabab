"""`python -m c3exp.report`: see c3exp/report/cli.py; a user error is one line on stderr and status 2."""
from c3exp.cli import run_reporting_user_errors
from c3exp.report.cli import main

if __name__ == "__main__":
    run_reporting_user_errors(main)
