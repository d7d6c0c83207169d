import numpy as np
from conftest import mapped_file, store_file

import solray


def test_task_roundtrip(ray_start):
    @solray.remote
    def f(x):
        return x * 2

    assert solray.get([f.remote(i) for i in range(5)]) == [0, 2, 4, 6, 8]


def test_large_value_is_zero_copy(ray_start):
    ref = solray.put(np.arange(1_000_000))
    a = solray.get(ref)
    assert not a.flags.writeable
    assert mapped_file(a) == store_file()  # the store's memory, not a copy
    assert a[-1] == 999_999
