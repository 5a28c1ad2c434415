# Copyright (c) mmepsa contributors. All rights reserved.
"""What differs between the torch versions of the supported range
(docs/compatibility.md) and broke on one of them."""
import io
import pickle

import numpy as np
import pytest
import torch

from mmepsa.utils import safe_pickle


def test_numpy_arrays_and_bytes_load_through_safe_pickle():
    """torch.save pickles with protocol 2, where bytes (and so every numpy
    array) are written as ``_codecs.encode(...)``; torch 2.1's own
    allow-list lacks it, so mmengine checkpoints with numpy state in their
    message hub were refused there."""
    state = dict(
        weight=torch.arange(4.),
        meta=dict(array=np.arange(3, dtype=np.int64), raw=b'\x00\xffab'))
    f = io.BytesIO()
    torch.save(state, f)  # protocol 2, as mmengine's Runner saves
    f.seek(0)
    loaded = safe_pickle.torch_load(f)
    assert torch.equal(loaded['weight'], state['weight'])
    np.testing.assert_array_equal(loaded['meta']['array'],
                                  state['meta']['array'])
    assert loaded['meta']['raw'] == b'\x00\xffab'


def test_codecs_encode_is_the_only_codecs_global():
    with pytest.raises(pickle.UnpicklingError, match='_codecs.decode'):
        safe_pickle.loads(b'c_codecs\ndecode\n.')


def test_containers_load_through_safe_pickle_on_every_torch():
    """mmengine's checkpoints hold collections.Counter (and may hold sets,
    bytearrays, complex numbers): newer torch's own list has them, torch
    2.1's has not, so mmepsa's list names them itself."""
    from collections import Counter, OrderedDict
    state = dict(
        counter=Counter(a=2, b=1),
        ordered=OrderedDict(x=1),
        tags={'train', 'val'},
        raw=bytearray(b'ab'),
        z=1 + 2j)
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    assert safe_pickle.torch_load(f) == state
