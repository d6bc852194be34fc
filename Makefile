# certrl — the README's two commands are `make demo` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= -q -c constraints.txt
STAMP := $(VENV)/.certrl-installed

.PHONY: install demo test lint bench reports clean

install: $(STAMP)

# CPU torch 2.13.0 via constraints.txt (no CUDA download); editable install with dev extras.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev,ray]'
	touch $(STAMP)

# The main job on a bundled demo policy: certify the smoothed Hopper (episode certificates,
# with the attack beside them), then the per-step bounds of the same policy at the attacks' eps.
demo: install
	$(BIN)/certrl certify demo:hopper-smooth --env hopper --sigma 0.1 \
		--budgets 0,0.025,0.05,0.1 --episodes 2000 --attack-episodes 20 --alpha 0.05 \
		--out results
	$(BIN)/certrl bound demo:hopper-smooth --env hopper --eps 0.075 --episodes 20 --out results

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check certrl tests benchmarks scripts

# Speed targets live here (ratios against baselines measured in the same run), not in tests.
bench: install
	$(BIN)/python benchmarks/bench_evaluator.py
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/bench_attacks.py
	$(BIN)/python benchmarks/bench_bounds.py
	$(BIN)/python benchmarks/bench_diagnose.py
	$(BIN)/python benchmarks/bench_atari.py

# Robustness reports of the bundled demo policies (HTML + PDF) in reports/; see the script.
reports: install
	scripts/make_demo_reports.sh

clean:
	rm -rf $(VENV) results build *.egg-info
