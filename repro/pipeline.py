"""``python -m repro.pipeline``: the report's runner, under the name the
README and the Makefile use. The code is :mod:`repro.report.pipeline`."""
import sys

from repro.report.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
