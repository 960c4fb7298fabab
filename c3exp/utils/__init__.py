"""Small helpers; no torch at package level: the CLI answers configuration questions before torch loads."""
