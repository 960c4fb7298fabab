"""Small helpers shared across c3exp, each module importing only what it needs (no torch at package level:
the CLI answers configuration questions before torch loads)."""
