# The two commands of the README: `make demo` and `make test` (each sets up first);
# `make test-fast` runs ruff and the unit and agent tests only (no broker, a few minutes).
.PHONY: setup demo test test-fast lint clean

.venv/.installed: pyproject.toml constraints.txt scripts/setup.sh native/fold/Cargo.lock \
		native/fold/src/lib.rs
	bash scripts/setup.sh

setup: .venv/.installed

demo: setup
	.venv/bin/qexplorer demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest

test-fast: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest tests/unit tests/agents

lint: setup
	.venv/bin/ruff check .

clean:
	-.venv/bin/qexplorer kafka stop
	-.venv/bin/qexplorer opensearch stop
	rm -rf .cache
