# peakloc: set-up, tests, demo and benchmarks. Everything runs in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Torch first, pinned: here pip takes a CPU build from local disk in seconds; on a machine with a GPU
# the same pin from PyPI is a CUDA build. Override for another build, e.g.
#   make install TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
# Written by `make install`; `make test` and `make demo` install first when it is missing or older than
# pyproject.toml, so that either runs straight after `git clone`.
STAMP := $(VENV)/.installed

.PHONY: install test fuzz lint demo sample-data figures bench bench-accuracy bench-memory clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m compileall -q peakloc  # start-up reads bytecode even where writing it is switched off
	@$(BIN)/peakloc --version
	@touch $(STAMP)

$(STAMP): pyproject.toml
	$(MAKE) install

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The damaged-file property of tests/test_fuzz.py with 3000 examples (a few minutes).
fuzz: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_fuzz.py --hypothesis-profile=fuzz

lint:
	$(BIN)/ruff check peakloc tests benchmarks tools
	$(BIN)/ruff format --check peakloc tests benchmarks tools

sample-data:
	$(BIN)/python tools/make_sample_data.py sample_data

figures: $(STAMP)
	$(BIN)/python tools/make_figures.py

demo: $(STAMP)
	mkdir -p out
	$(BIN)/peakloc find sample_data -o out/peaks.csv --overlay out/overlays
	$(BIN)/peakloc find sample_data/pose --axes CYX -o out/pose_keypoints.csv --overlay out/overlays --overlay-sheet
	@echo "tables: out/peaks.csv out/pose_keypoints.csv; overlays: out/overlays/"

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_speed.py

bench-memory:
	$(BIN)/python benchmarks/bench_memory.py | tee benchmarks/results/memory.txt

bench-accuracy:
	$(BIN)/python benchmarks/bench_accuracy.py | tee benchmarks/results/accuracy.txt

clean:
	rm -rf out .pytest_cache build *.egg-info
