# Copyright (c) mmepsa contributors. All rights reserved.
"""mmepsa.analysis.load_test, the logic of tools/analysis_tools/load_test.py:
the exit status and the generated images. (The tool itself, streaming
images through the demo model: test_tools/test_load_test.py.)"""
from mmepsa.analysis.load_test import (KINDS, exit_status, image_specs,
                                       write_images)


def test_exit_status():
    base = dict(
        failures=[],
        growth_ok=True,
        num_images=5,
        max_growth=0.1,
        warmup=2,
        rss_growth=0.0,
        peak_rss_growth=0.0)
    assert exit_status(base) == 0
    assert exit_status(dict(base, growth_ok=False)) == 4
    assert exit_status(dict(base, failures=[{}])) == 3
    assert exit_status(dict(base, failures=[{}], growth_ok=False)) == 3


def test_images_are_deterministic(tmp_path):
    specs = image_specs(200, 64, 1333, seed=0)
    assert specs == image_specs(200, 64, 1333, seed=0)
    assert specs != image_specs(200, 64, 1333, seed=1)
    # the corner cases first: 4 extreme sizes x 5 kinds
    assert {(w, h)
            for _, w, h in specs[:20]} == {(64, 64), (1333, 1333), (64, 1333),
                                           (1333, 64)}
    assert {k for k, _, _ in specs[:20]} == set(KINDS)
    assert all(64 <= w <= 1333 and 64 <= h <= 1333 for _, w, h in specs)
    assert len({(w, h) for _, w, h in specs[20:]}) > 150
    # a shorter stream is the start of a longer one
    assert image_specs(30, 64, 1333, seed=0) == specs[:30]

    small = image_specs(8, 16, 48, seed=0)
    first = write_images(str(tmp_path / 'a'), small, seed=0)
    again = write_images(str(tmp_path / 'b'), small, seed=0)
    other = write_images(str(tmp_path / 'c'), small, seed=1)
    read = [(tmp_path / d / r['file']).read_bytes()
            for d, recs in (('a', first), ('b', again), ('c', other))
            for r in recs]
    assert read[:8] == read[8:16]
    assert read[:8] != read[16:]
