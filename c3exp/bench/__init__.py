"""Training throughput of configurations, interleaved in one process (c3exp bench); no imports: --help stays fast."""
