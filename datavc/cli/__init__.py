"""The command-line interface: the ``datavc`` command.

``entry`` is the command's entry point (plain ``status`` and ``checkout`` run there without
importing typer), ``app`` the typer app for every other command line, ``console`` what both
print (the error line and exit code, progress bars, status and checkout lines). It only
parses arguments, calls the workspace, and prints. May import: ``datavc.workspace`` and the
layers below; never ``datavc.fs``.
"""
