# The two commands of the README: `make demo` and `make test` (each sets up first).
.PHONY: setup demo test lint clean

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: .venv/.installed

demo: setup
	.venv/bin/qexplorer demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check .

clean:
	-.venv/bin/qexplorer kafka stop
	rm -rf .cache
