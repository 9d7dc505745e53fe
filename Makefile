# Set-up and checks. `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
TEST_JOBS ?= 2
BENCH_MB ?= 256

.PHONY: install demo test test-all bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,bench,dev]'
	touch $(STAMP)

demo: install
	$(PY) examples/gentext.py build/demo.txt --mb 20
	DISCO_MASTER=local $(PY) examples/wordcount.py build/demo.txt --top 20

# the tests of one file run in one worker process (their module-scoped clusters and network
# namespaces stay theirs); TEST_JOBS=0 runs everything in this process
test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

bench: install
	$(PY) bench/compression.py
	$(PY) bench/wordcount.py --mb $(BENCH_MB)
	$(PY) bench/shuffle.py --mb $(BENCH_MB)
	$(PY) bench/journal.py --jobs 10000
	$(PY) bench/journal.py --jobs 10000 --keep
	$(PY) bench/loop.py
	$(PY) bench/speculation.py
	$(PY) bench/sort.py
	$(PY) bench/tasks.py
	$(PY) bench/cluster.py --mb $(BENCH_MB)

lint: install
	$(PY) -m ruff check common disco mesh scheduler shuffle storage tests bench examples

clean:
	rm -rf build .pytest_cache $(VENV)
