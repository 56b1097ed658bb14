"""The data sets that ship with ebm_ppl (package data; no backend involved)."""

import hashlib

import numpy as np
import pytest

from ebm_ppl.datasets import load_mnist

# standard MNIST digit counts (LeCun & Cortes): 0..9
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _digest(rows):
    return hashlib.md5(np.packbits(rows.astype(np.uint8), axis=1).tobytes()).hexdigest()


@pytest.mark.parametrize("split, n, counts, on, first5", [
    ("train", 60000, TRAIN_COUNTS, 6221431, "1ac6158c033d7fcf54dc507fb89b05a4"),
    ("test", 10000, TEST_COUNTS, 1052359, "4e45dfb65825b6558fed6f77cfba32e9"),
])
def test_load_mnist_full(split, n, counts, on, first5):
    x, y = load_mnist(split, return_labels=True)
    assert x.shape == (n, 784) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert set(np.unique(x)) == {0.0, 1.0}
    assert np.bincount(y, minlength=10).tolist() == counts
    assert int(x.sum()) == on  # pixels above 127
    assert _digest(x[:5]) == first5
    assert np.array_equal(load_mnist(split), x)  # without labels: the same images


@pytest.mark.parametrize("split", ["validation", "TRAIN", None, 0])
def test_load_mnist_bad_split(split):
    with pytest.raises(ValueError, match="split"):
        load_mnist(split)
