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
DEPLOY_ARGS ?=

.PHONY: setup test demo seg-demo benchmark clean-venv setup-compat test-compat setup-newest test-newest deploy-demo

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
	$(PY) -m mmepsa.demo.seg_data
	$(PY) $$($(PY) -c "import mmseg, os; print(os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'tools', 'train.py'))") \
		configs/seg_demo/fpn_epsanet50-s_demo-shapes.py $(SEG_DEMO_ARGS)

clean-venv:
	rm -rf .venv

# Side by side: mmepsa's EPSANet vs the original formulation vs mmdet's ResNet
# (README, Performance); writes work_dirs/benchmark/benchmark.{md,json,png}.
benchmark: setup
	$(PY) tools/analysis_tools/compare_speed.py $(BENCH_ARGS)

# The fast path's tuning cost and its time against the plain model, with
# bounds (exit status 1 past one; docs/performance.md); writes
# work_dirs/benchmark/fast_path_check.{md,json}. On the classic stack:
# make fast-path-check PY=.venv-torch21/bin/python
.PHONY: fast-path-check
fast-path-check: setup
	$(PY) tools/analysis_tools/fast_path_check.py $(CHECK_ARGS)

# The demo Mask R-CNN (make demo's work_dirs/demo checkpoint) and RetinaNet
# (work_dirs/demo_retinanet), each trained first if its checkpoint is
# missing, exported to ONNX, quantized to int8, evaluated on the demo val set
# and timed on onnxruntime fp32 and OpenVINO fp32/bf16/int8/int8-bf16 against PyTorch;
# one table with its bounds (exit status 3 past one); writes
# work_dirs/deploy-demo/ (docs/deployment.md).
deploy-demo: setup
	$(PY) -m mmepsa.deployment.demo $(DEPLOY_ARGS)

# OpenMMLab's lint set (.pre-commit-config.yaml, mmdet 3.3's) at the same
# versions (requirements/lint.txt), as pre-commit cannot fetch its hook
# repositories here. As with pre-commit, the tools get an environment of their
# own, .venv-lint: in .venv, yapf 0.32 would replace the yapf that mmengine
# formats configs with. Every checker runs; lint fails if any finds something.
# `make format` applies isort, yapf and the quote fixer (which exits 1 when it
# changed a file) in place.
LINT_PATHS := mmepsa tools tests configs setup.py
LINT_PY := .venv-lint/bin/python
.PHONY: lint format

.venv-lint/.stamp: requirements/lint.txt
	rm -rf .venv-lint
	$$(command -v python3.11 || command -v python3) -m venv .venv-lint
	$(LINT_PY) -m pip install --disable-pip-version-check -q -r requirements/lint.txt 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(LINT_PY) -c 'import codespell_lib, flake8, isort, pre_commit_hooks, yapf'
	cp requirements/lint.txt $@

lint: .venv-lint/.stamp
	@status=0; \
	echo '[lint] flake8'; $(LINT_PY) -m flake8 $(LINT_PATHS) || status=1; \
	echo '[lint] isort'; $(LINT_PY) -m isort --check-only --diff $(LINT_PATHS) || status=1; \
	echo '[lint] yapf'; $(LINT_PY) -m yapf --diff --recursive $(LINT_PATHS) || status=1; \
	echo '[lint] codespell'; $(LINT_PY) -m codespell_lib $(LINT_PATHS) docs README.md || status=1; \
	exit $$status

format: .venv-lint/.stamp
	$(LINT_PY) -m isort $(LINT_PATHS)
	$(LINT_PY) -m yapf --in-place --recursive $(LINT_PATHS)
	$(LINT_PY) -m pre_commit_hooks.string_fixer $$(find $(LINT_PATHS) -name '*.py') || true
