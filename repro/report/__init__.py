"""The report half of repro: what serves the notebooks and the pipeline
(the library half, ``repro.data``/``model``/``train``/``evaluate``, builds,
trains and evaluates models). Moving in step by step (issue 14): so far
result files and console tables (:mod:`repro.report.files`, imported here as
``repro.report.write_json`` etc., as before) and the notebooks' parameter
declarations (:mod:`repro.report.parameters`)."""
from repro.report.files import atomic_write_text, git_commit, print_recall_table, write_json  # noqa: F401
