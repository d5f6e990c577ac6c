"""Runs, lock files, lineage, audit and reproduce: the layer between the interfaces and
the workspace. A run records what a command read (snapshot ids), with which code,
parameters and environment, and what it wrote; the rest reads those records back."""
