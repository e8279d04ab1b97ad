# talkies: make install | run | test | lint | bench
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench lock help

help:
	@echo "make install  - create .venv with the CPU stack and test tools (apt-get for ffmpeg/espeak-ng/sox as root)"
	@echo "make run      - install if needed, then serve on TALKIES_HOST:TALKIES_PORT (default 127.0.0.1:8000)"
	@echo "make test     - install if needed, then run the whole test suite"
	@echo "make lint     - ruff + mypy"
	@echo "make bench    - run the benchmarks under bench/"
	@echo "make lock     - refresh uv.lock and constraints-cpu.txt"

$(STAMP): pyproject.toml constraints-cpu.txt scripts/install.sh
	./scripts/install.sh
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/talkies serve

test: $(STAMP)
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	@set -e; for script in bench/*.py; do echo "== $$script"; $(PY) $$script; done

lock: $(STAMP)
	$(PY) -m pip install -q -c constraints-cpu.txt uv
	$(VENV)/bin/uv lock --python 3.11
	./scripts/export-constraints.sh
