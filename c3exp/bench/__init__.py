"""`python -m c3exp.bench model=resnet110 attn=none,c3 [bench.*=...]`: training throughput, interleaved.

Comma-separated overrides (`attn=none,c3`, `model=resnet20,resnet110`, `bench.precision=32,bf16-mixed`)
define the configurations, their product in the order given. Every configuration is built once in
this process; after warm-up, full training steps (forward, backward, optimizer step) of all of them
alternate round-robin, each step timed, so a change of load on the machine hits every
configuration alike. bench.mode=loop instead alternates blocks of Lightning's Trainer.fit and of a
bare PyTorch loop on the same network, batches and optimizer. Raw step times, the machine and the
date go to a new outputs/bench/<UTC date-time>-p<pid>.json every run (or to bench.path).

The bench composes conf/bench.yaml (the training config plus bench.*),
so training configs and checkpoints never carry bench settings. Modules, by concern:
settings (bench.* validated), configs (overrides expanded and composed), steps (one training step
on a synthetic batch), timing (the clock, interleaving), loops (Lightning against a bare loop),
stats (spread and ratios), machine (the machine and its matmul peak), output (tables, JSON file),
run (one run end to end), cli (the command line).
"""
from c3exp.bench.cli import HELP, main
from c3exp.bench.configs import (
    BENCH_CONFIG,
    PROCESS_KEYS,
    BenchConfig,
    compose_bench,
    config_label,
    configurations,
    expand_overrides,
)
from c3exp.bench.loops import BatchList, bare_block, compare_loops, lightning_block
from c3exp.bench.machine import cpu_model, matmul_peak  # not machine(): the name is the module's
from c3exp.bench.output import REPORT_DIR, format_achieved, format_table, new_report_path, write_report
from c3exp.bench.run import bench, run_loops, run_steps
from c3exp.bench.settings import AUTOCAST_DTYPES, DEVICES, MODES, BenchSettings
from c3exp.bench.stats import TRAIN_FLOPS_PER_MAC, achieved, block_medians, paired_ratios, ratios, summarise
from c3exp.bench.steps import Batch, Trainee, build_module, make_trainee, synthetic_batch, train_step
from c3exp.bench.timing import between_starts, interleave, synchronize, timed

__all__ = [
    "AUTOCAST_DTYPES", "BENCH_CONFIG", "DEVICES", "HELP", "MODES", "PROCESS_KEYS", "REPORT_DIR", "TRAIN_FLOPS_PER_MAC",
    "Batch", "BatchList", "BenchConfig", "BenchSettings", "Trainee",
    "achieved", "bare_block", "bench", "between_starts", "block_medians", "build_module", "compare_loops", "compose_bench",
    "config_label", "configurations", "cpu_model", "expand_overrides", "format_achieved", "format_table", "interleave",
    "lightning_block", "main", "make_trainee", "matmul_peak", "new_report_path", "paired_ratios", "ratios",
    "run_loops", "run_steps", "summarise", "synchronize", "synthetic_batch", "timed", "train_step", "write_report",
]
