"""Your runs' tables and curves (c3exp report); modules import only earlier ones, and none here: --help skips torch."""
