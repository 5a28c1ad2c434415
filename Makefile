# The README's commands. `make test` and `make demo` set up .venv first (idempotent).
PY := .venv/bin/python
PYTEST_ARGS ?=
# pytest-xdist workers: `auto` = one per CPU (2 on the CI machine); 0 runs
# the suite in one process. Each test file goes to one worker (loadfile), so
# a module's fixtures are made once (docs/testing.md).
TEST_WORKERS ?= auto
# The whole of tests/ unless PYTEST_ARGS names test paths (tests/...).
PYTEST = -m pytest $(if $(filter tests/%,$(PYTEST_ARGS)),,tests) \
	-n $(TEST_WORKERS) --dist loadfile
DEMO_ARGS ?=
SEG_DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup test demo seg-demo benchmark clean-venv setup-compat test-compat setup-newest test-newest

setup:
	bash tools/setup_env.sh

test: setup
	$(PY) $(PYTEST) $(PYTEST_ARGS)

# The classic stack CI also tests (docs/compatibility.md): torch 2.1.2,
# torchvision 0.16.2, mmcv 2.1.0 with ops, in .venv-torch21.
setup-compat:
	bash tools/setup_env.sh .venv-torch21 requirements/torch21.txt

test-compat: setup-compat
	.venv-torch21/bin/python $(PYTEST) $(PYTEST_ARGS)

# The newest torch on the registry, mmcv built from source (not in CI; the
# result is recorded in docs/compatibility.md). PIP_CONFIG_FILE=/dev/null: no
# pip configuration file may cap torch's version.
setup-newest:
	PIP_CONFIG_FILE=/dev/null bash tools/setup_env.sh .venv-torch-newest requirements/torch-newest.txt

test-newest: setup-newest
	.venv-torch-newest/bin/python $(PYTEST) $(PYTEST_ARGS)

demo: setup
	$(PY) tools/run_demo.py $(DEMO_ARGS)

# Semantic segmentation on the demo shapes (mmsegmentation's own train.py).
seg-demo: setup
	$(PY) -m mmepsa.datasets.demo_seg
	$(PY) $$($(PY) -c "import mmseg, os; print(os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'tools', 'train.py'))") \
		configs/seg_demo/fpn_epsanet50-s_demo-shapes.py $(SEG_DEMO_ARGS)

clean-venv:
	rm -rf .venv

# Side by side: mmepsa's EPSANet vs the original formulation vs mmdet's ResNet
# (README, Performance); writes work_dirs/benchmark/benchmark.{md,json,png}.
benchmark: setup
	$(PY) tools/analysis_tools/compare_speed.py $(BENCH_ARGS)
