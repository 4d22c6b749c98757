"""The command line: every typer app (``cyclealign`` is :mod:`cyclealign.cli.main`) and the one error boundary."""
