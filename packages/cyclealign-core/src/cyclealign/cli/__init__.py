"""The command line: ``cyclealign`` (:mod:`cyclealign.cli.main`), its shared error boundary and the report commands."""
