# The README's commands. `make test` and `make demo` set up .venv first (idempotent).
PY := .venv/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup test demo clean-venv

setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: setup
	$(PY) tools/run_demo.py $(DEMO_ARGS)

clean-venv:
	rm -rf .venv
