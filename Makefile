# talkies: make install | run | test | lint | bench
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench lock image-test help

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

# The whole suite (engines in worker processes where the registry/executor default says so), then the
# API suite again with every engine in the server process, and once more with every engine (the
# weight-free ones too) in a worker process: the isolation mode must never change what the API does.
# Those two passes leave out the modules marked `pinned_isolation` (their apps choose their own mode).
test: $(STAMP)
	$(PY) -m pytest tests
	$(PY) -m pytest tests/api --engine-isolation=inprocess
	$(PY) -m pytest tests/api --engine-isolation=process

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	@set -e; for script in bench/[!_]*.py; do echo "== $$script"; $(PY) $$script; done

# Build the CPU image and run it: health check, models, speech, transcription, non-root, /data owner, SIGTERM.
image-test: $(STAMP)
	./scripts/image-test.sh

lock: $(STAMP)
	$(PY) -m pip install -q -c constraints-cpu.txt uv
	$(VENV)/bin/uv lock --python 3.11
	./scripts/export-constraints.sh
