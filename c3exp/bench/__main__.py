"""`python -m c3exp.bench ...` (the CLI lives in c3exp.bench.cli, importable without running it)."""
from c3exp.bench.cli import main

main()
