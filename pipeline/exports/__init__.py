"""Partner usage exports (brief §7, ``docs/exports.md``): the I/O around the pure FOCUS rows of
:mod:`pipeline.domain.focus`: wholesale cards from ``config/``, the CSV / Parquet / manifest
files, building and delivering them, verifying them, and the FinOps Foundation's validator."""
