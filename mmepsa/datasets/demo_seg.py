# Copyright (c) mmepsa contributors. All rights reserved.
"""Deprecated alias of :mod:`mmepsa.demo.seg_data` (warns on import;
``python -m mmepsa.demo.seg_data`` is the command line)."""
import sys

from mmepsa.demo._aliases import forward, warn_moved

# run as a script, the warning is the script's own, so that Python shows it
warn_moved(
    'mmepsa.datasets.demo_seg',
    'mmepsa.demo.seg_data',
    stacklevel=2 if __name__ == '__main__' else 3)
__getattr__ = forward('mmepsa.datasets.demo_seg', 'mmepsa.demo.seg_data')

if __name__ == '__main__':
    from mmepsa.demo.seg_data import main
    sys.exit(main())
