"""The workspace layer: a folder's (usually a Git repo's) datasets and their pointer files.

A small :class:`~datavc.workspace.core.Workspace` core (the datasets found from pointer files
and staged state, version specs resolved) with add, commit, checkout and status each in a
module of its own; beside them the workspace's own files: config, stat cache, lock, and git
(``.gitignore``, author, HEAD). Git hooks and remotes belong here too. May import:
``datavc.store``, ``datavc.format``, ``datavc.errors``.
"""
