"""Training pieces shared by every task: callbacks, loggers, sweep bookkeeping (import the modules themselves)."""
