"""Training throughput of configurations, interleaved in one process (the command: c3exp bench, c3exp/cli/bench.py).

Steps of all configurations alternate round-robin, so a change of load on the machine hits every one alike.
Nothing is imported here: --help stays fast.
"""
