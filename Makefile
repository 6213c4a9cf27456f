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

.PHONY: setup demo test lint bench clean

setup:
	@bash tools/setup.sh

## The main job: the end-to-end demo (see README).
demo: setup
	@$(VENV)/bin/derain-ros demo

## The tests: lint, then the whole suite.
test: setup lint
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check .

## Every benchmark in bench/, one after the other.
bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build .pytest_cache .ruff_cache
