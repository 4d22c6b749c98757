"""The run report: one run's page (:mod:`cyclealign.report.page`) and the comparison of runs (:mod:`.compare`)."""
