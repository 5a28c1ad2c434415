# The README's commands. `make test` and `make demo` set up .venv first (idempotent).
PY := .venv/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=
SEG_DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup test demo seg-demo benchmark clean-venv

setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

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
