# The two commands of the README, plus helpers. Each target does the whole set-up
# first (tools/setup.sh is idempotent and quick when nothing changed).
#
# DDS stays on this machine: every process started from here has
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and the loopback Fast DDS profile.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_localhost.xml
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
export PYTHONUNBUFFERED := 1

VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench quality train-default clean

setup:
	@bash tools/setup.sh

## The main job: the end-to-end demo (see README).
demo: setup
	@$(VENV)/bin/derain-ros demo

## The tests: lint, then the whole suite.
test: setup lint
	@$(PY) -m pytest $(PYTEST_ARGS)

## Lint: ruff, then mypy (configured in pyproject.toml: strict on the core; cached in
## .mypy_cache, so a second run takes seconds).
lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy

## The speed benchmarks in bench/, one after the other (minutes).
BENCHES := interfaces events synth model_speed node
bench: setup
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

## The quality table (long: trains nothing, evaluates the shipped and recipe weights).
quality: setup
	@$(PY) bench/quality.py

## Re-train the shipped weights across rain families, and the leave-one-family-out set
## (long: hours on 2 CPU cores; minutes on a GPU with bench/gpu_session.sh).
train-default: setup
	@$(PY) bench/train_families.py --device auto --seconds 3000 --init-shipped --install

clean:
	rm -rf build .pytest_cache .ruff_cache .mypy_cache
