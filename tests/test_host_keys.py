"""The NumPyro backend's host-side key splits (backends/ebm_ppl_numpyro/host_keys.py) are
JAX's, bit for bit."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
host_keys = pytest.importorskip("ebm_ppl_numpyro.host_keys")


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 + 5, 123456789])
@pytest.mark.parametrize("num", [2, 3, 4, 17])
def test_split_is_jax_split(seed, num):
    key = jax.random.PRNGKey(seed)
    np.testing.assert_array_equal(host_keys.split(host_keys.host_key(key), num),
                                  np.asarray(jax.random.split(key, num)))


@pytest.mark.parametrize("seed", [0, 3, 2**32 - 1])
@pytest.mark.parametrize("data", [0, 1, 5, 2**32 - 1])
def test_fold_in_is_jax_fold_in(seed, data):
    key = jax.random.PRNGKey(seed)
    np.testing.assert_array_equal(host_keys.fold_in(host_keys.host_key(key), data),
                                  np.asarray(jax.random.fold_in(key, data)))


def test_the_backend_splits_on_the_host_and_in_a_trace_alike():
    from ebm_ppl.backend import get_backend

    ops = get_backend("numpyro").ops
    key = jax.random.PRNGKey(11)
    host = [np.asarray(k) for k in ops.split(key, 3)]
    traced = jax.jit(lambda k: ops.split(k, 3))(key)
    for a, b in zip(host, traced):
        np.testing.assert_array_equal(a, np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ops.fork(key)), np.asarray(jax.jit(ops.fork)(key)))
    assert host_keys.host_key(jax.random.key(0)) is None  # a typed key: JAX splits it
