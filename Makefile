# Every target creates .venv and installs the pinned dependencies when needed,
# so `make test` and `make repro` work on a fresh clone with nothing but
# Python 3.11 (python3 -m venv) on the PATH.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# OpenMP threads that sleep instead of spinning while waiting: on a shared
# or busy machine, spinning made torch's 2-thread CPU runs 4-12x slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: repro figures smoke rehearsal seeds rerun test install clean-venv bench gpu-projection

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job: every notebook of the report, in order, with papermill
# (params/default.yaml; <= 20 minutes on 2 CPU cores). Runs whose results
# exist are skipped; add ARGS=--force to rerun them.
repro: $(STAMP)
	$(PY) -m repro.pipeline --profile default $(ARGS)

# Training seeds 1 and 2 of 02 (params/seeds.yaml; 4 runs, about 20-45 minutes
# on 2 cores, beyond the default profile's budget, so their results are
# committed); then `make figures` pools them into the claims.
seeds: $(STAMP)
	$(PY) -m repro.pipeline --profile seeds $(ARGS)

# The rerun check: 02's seed-0 runs again with 1 thread (params/rerun_threads1.yaml,
# into results/rerun/threads1/); then `make figures` compares the verdicts.
rerun: $(STAMP)
	$(PY) -m repro.pipeline --profile rerun_threads1 $(ARGS)

# Only the comparison with the paper (05), from the results already in
# results/: figures, summary, claims and the README table, in seconds.
figures: $(STAMP)
	$(PY) -m repro.pipeline --profile default --only 05_paper_comparison

# Every notebook on the tiny city (<= 5 minutes); writes under cache/smoke/.
smoke: $(STAMP)
	$(PY) -m repro.pipeline --profile smoke $(ARGS)

# The paper profile rehearsed on 2 CPU cores (<= 25 minutes): the same notebooks
# and settings with only counts shrunk, on synthetic data in the exact layouts
# of Pittsburgh / Tokyo (params/rehearsal.yaml); writes under cache/rehearsal/.
# Then measures this CPU's extraction and training throughput (about a minute)
# into results/throughput/cpu.json, which prices `--profile paper --list`.
rehearsal: $(STAMP)
	$(PY) -m repro.pipeline --profile rehearsal $(ARGS)
	$(PY) -m repro.report.costs measure --device cpu --source "make rehearsal"

test: $(STAMP)
	$(PY) -m pytest

# Speed and memory benchmarks (issue 6): results/benchmarks/*.csv and
# summary.md; about 15 minutes on 2 cores. ARGS=--quick: tiny shapes, seconds;
# ARGS="--only profile": cProfile of the default training, before/after.
bench: $(STAMP)
	$(PY) -m benchmarks.run_all $(ARGS)

# Without a GPU (issue 16): the paper profile's Pitts30k VGG-16 + NetVLAD run projected
# on one H200 at the goals' fractions of its bf16 peak, from FLOP counts, and the cores
# of JPEG decoding that needs at this CPU's measured rate (under a minute; makes the
# rehearsal's city if absent): results/benchmarks/gpu_projection.json and .csv.
gpu-projection: $(STAMP)
	$(PY) -m benchmarks.gpu_projection $(ARGS)

clean-venv:
	rm -rf $(VENV)
