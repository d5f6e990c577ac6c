"""The benchmark's parts (``scripts/bench.py`` runs them): commands run and measured, the
seeded datasets, the tools, the measurements of one dataset, the targets, the report."""
