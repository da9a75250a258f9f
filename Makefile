# vlaforge: two entry points that work on a fresh machine: `make demo` and `make test`.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install lint test demo bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first: the CPU wheel on disk. Anything that depends on torch afterwards finds it satisfied.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -c constraints.txt -e '.[dev,ros2,robosuite]'
	# robosuite without its declared mink==0.0.5 (numpy < 2): see the robosuite extra in pyproject.toml
	$(BIN)/pip install --no-deps robosuite==1.5.2
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP)
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(BIN)/python -m pytest -q -n 2 --dist loadfile

demo: $(STAMP)
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(BIN)/vlaforge demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
