# The README's two commands: `make demo` and `make test`. Both run `setup` first, which is idempotent:
# the venv is rebuilt only when pyproject.toml, conf/jars.txt or the setup scripts change. Setup also
# fetches sbt's launcher; `make test` builds the SQL jar with it (once, then when its sources change).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(or $(SPARKREC_CACHE),$(HOME)/.cache/sparkrec)
# Horovod's wheel is built against the pinned torch, so a new pin builds a new one.
TORCH_PIN := $(shell python3 scripts/pin.py torch)
$(if $(TORCH_PIN),,$(error cannot read torch's pin from pyproject.toml with python3 scripts/pin.py torch))
WHEELS := $(CACHE)/wheels/torch-$(TORCH_PIN)
JARS := $(or $(SPARKREC_JAR_DIR),$(CACHE)/jars)
JARS_FILE := $(or $(SPARKREC_CONF_DIR),conf)/jars.txt
STAMP := $(VENV)/.setup-done
SQL_JAR := target/sparkrec-sql.jar
SQL_SOURCES := build.sbt project/build.properties rec_plugin/op_templates.json $(shell find rec_plugin/jvm/src/main -name '*.scala')
export SPARKREC_CACHE := $(CACHE)
export SPARKREC_JAR_DIR := $(JARS)
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup sql-jar demo test lint bench clean

# The JVM's class archive (spark_jobs/class_archive.py) is written once per pyspark install and java.
# The jars and sbt's launcher are checked on every run (a cache removed since the stamp is filled again).
setup: $(STAMP)
	@scripts/fetch_jars.sh $(JARS_FILE) $(JARS) && scripts/sbt --fetch-launcher && $(PY) -m spark_jobs.class_archive

# One setup at a time per cache (a `make demo` beside a `make test`, two checkouts); a venv without a
# working pip (a cut `python3 -m venv`) is made again.
$(STAMP): Makefile pyproject.toml $(JARS_FILE) project/build.properties scripts/build_horovod_wheel.sh \
		scripts/fetch_jars.sh scripts/complete_zip scripts/pin.py scripts/cxx17 scripts/sbt
	@start=$$(date +%s); mkdir -p $(CACHE) && exec 9>$(CACHE)/.setup.lock && flock 9 && \
	{ $(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && python3 -m venv $(VENV); }; } && \
	$(PY) -m pip install -q "torch==$$(python3 scripts/pin.py torch)" packaging && \
	scripts/build_horovod_wheel.sh $(abspath $(PY)) $(WHEELS) && \
	$(PY) -m pip install -q --find-links $(WHEELS) -e '.[dev]' && \
	$(PY) -m pip install -q --no-deps "torchrec==$$(python3 scripts/pin.py torchrec)" && \
	scripts/fetch_jars.sh $(JARS_FILE) $(JARS) && \
	scripts/sbt --fetch-launcher && \
	touch $(STAMP) && echo "setup: done in $$(( $$(date +%s) - start )) s"

# rec_plugin's JVM half: built by sbt (launcher and downloads cached), rebuilt only when its sources change.
sql-jar: $(SQL_JAR)

$(SQL_JAR): $(SQL_SOURCES)
	scripts/sbt package < /dev/null

demo: setup
	$(PY) -m spark_jobs.cli demo --out artifacts/demo

test: setup $(SQL_JAR)
	scripts/sbt test < /dev/null && $(PY) -m pytest -q --durations=30 tests

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(PY) bench/generate.py && $(PY) bench/ingest.py && $(PY) bench/featurize.py && $(PY) bench/train.py

clean:
	rm -rf artifacts .pytest_cache
