"""More than one device on JAX: ``fit_unnormalized(..., devices=)`` as placement.

A fit over several devices runs the *same* compiled update as a one-device fit: the
persistent chains are placed with a ``NamedSharding`` along their chain axis (axis 0),
each minibatch is constrained along its example axis inside the update
(``jax.lax.with_sharding_constraint``), and the parameters, the optimizer state and the
(small) training set are replicated. ``jax.jit``'s SPMD partitioner splits the program:
every device runs the kernels on its own chains and examples, and the means over chains
and examples in the surrogate loss become all-reduces (psum) across the devices. The
semantics of a jitted program do not depend on where its inputs live, so a sharded fit
computes what the unsharded one does, up to the order of floating-point sums.

Random numbers. Keys are split with JAX's threefry, replicated (every device holds the
same scalar key). Bulk numbers (uniforms, normals) are drawn from keys whose bits name a
Philox-4x32-10 key (Salmon et al. 2011); the bits of element ``i`` of a draw are a pure
function of ``(key, i)``, so each device computes only the elements of its own rows and
they are the elements a one-device draw has there. JAX's own Philox lowers its
``mulhi`` to an op that the Shardy partitioner cannot convert (JAX 0.10.2: "failed to
legalize operation 'mhlo.unknown'"), so a sharded fit draws from
:data:`spmd_philox`, the same Philox with ``mulhi`` written as four 16-bit products:
bit for bit the numbers ``jax.random.wrap_key_data(key, impl="philox4x32")`` gives
(checked by the tests), hence the same streams as ``devices=None``.
"""

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.random import define_prng_impl
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["spmd_philox", "make_mesh", "make_placement", "ShardedPlacement"]

_M0, _M1 = np.uint32(0xD2511F53), np.uint32(0xCD9E8D57)  # Philox-4x32 multipliers
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)  # Weyl key bumps
_LOW16, _SHIFT16 = np.uint32(0xFFFF), np.uint32(16)


def _mulhi(m, x):
    """The high 32 bits of the 64-bit product ``m * x`` (uint32), from 16-bit halves."""
    m0, m1 = np.uint32(int(m) & 0xFFFF), np.uint32(int(m) >> 16)
    x0, x1 = x & _LOW16, x >> _SHIFT16
    p00, p01, p10, p11 = x0 * m0, x0 * m1, x1 * m0, x1 * m1
    mid = (p00 >> _SHIFT16) + (p01 & _LOW16) + (p10 & _LOW16)
    return p11 + (p01 >> _SHIFT16) + (p10 >> _SHIFT16) + (mid >> _SHIFT16)


def _philox_rounds(k0, k1, x0, x1, x2, x3):
    for r in range(10):  # Philox-4x32-10, as jax._src.random.philox4x32
        if r:
            k0, k1 = k0 + _W0, k1 + _W1
        lo0, hi0 = x0 * _M0, _mulhi(_M0, x0)
        lo1, hi1 = x2 * _M1, _mulhi(_M1, x2)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return x0, x1, x2, x3


def _random_bits(key, bit_width, shape):
    """JAX's Philox-4x32 ``random_bits`` layout: element i hashes the counter (i_hi, i_lo, 0, 0)."""
    if bit_width != 32:
        raise NotImplementedError(f"spmd_philox draws 32-bit words, not {bit_width}-bit")
    size = int(np.prod(shape, dtype=np.int64))
    if size >= 2**32:
        raise NotImplementedError("spmd_philox: more than 2**32 numbers in one draw")
    counter = lax.iota(np.uint32, size).reshape(shape)
    zeros = jnp.zeros(shape, np.uint32)
    out = _philox_rounds(key[0], key[1], zeros, counter, zeros, zeros)
    return out[0] ^ out[1] ^ out[2] ^ out[3]


def _bulk_only(*args):
    raise NotImplementedError("spmd_philox keys only draw bulk numbers; split keys with threefry")


spmd_philox = define_prng_impl(
    key_shape=(2,), seed=_bulk_only, split=_bulk_only, random_bits=_random_bits, fold_in=_bulk_only,
    name="ebm_ppl_spmd_philox4x32", tag="ephx")
"""Philox-4x32-10 as a JAX PRNG implementation whose lowering the SPMD partitioner splits."""


def make_mesh(devices):
    """A one-axis-or-more ``Mesh`` from ``devices`` (an int, a list of ``jax.Device``, or a
    ``Mesh``), checked before anything runs."""
    if isinstance(devices, Mesh):
        return devices
    available = jax.devices()
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices={int(devices)}: this process sees {len(available)} {available[0].platform} device(s) "
                f"(jax.devices()); on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax "
                "simulates N")
        chosen = available[:int(devices)]
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, jax.Device) for d in devices):
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices={list(devices)!r} names a device twice")
        chosen = list(devices)
    else:
        raise TypeError(f"devices must be an int, a list of jax.Device or a jax.sharding.Mesh, got {devices!r}")
    return Mesh(np.array(chosen), ("shards",))


class ShardedPlacement:
    """Where a fit's arrays live on a mesh: chains and minibatches split along axis 0
    over every axis of the mesh, everything else replicated."""

    def __init__(self, mesh):
        self.mesh = mesh
        self.num_shards = int(mesh.devices.size)
        self.split = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.key = ("mesh", tuple(mesh.axis_names), tuple(d.id for d in mesh.devices.flat))

    def _put(self, x, sharding):
        if isinstance(x, jax.core.Tracer):
            return lax.with_sharding_constraint(x, sharding)
        return jax.device_put(x, sharding)

    def shard_rows(self, tree):
        """Leaves with a leading axis divisible by the device count are split along it
        (chains, per-chain sampler state, examples); the rest (step sizes) is replicated."""
        def place(x):
            shape = getattr(x, "shape", ())
            if len(shape) and shape[0] % self.num_shards == 0 and shape[0] > 0:
                return self._put(x, self.split)
            return self._put(x, self.replicated)

        return jax.tree_util.tree_map(place, tree)

    def replicate(self, tree):
        return jax.tree_util.tree_map(lambda x: self._put(x, self.replicated), tree)

    # ---- what fit_unnormalized asks of a placement (the same names on Pyro's) ------------
    rank = 0
    kind = "devices"

    def local_estimator(self, estimator):
        return estimator  # one program over the global chains

    def local_indices(self, idx):
        return idx  # the global minibatch, split by the sharding constraint in the update

    def sampling_seed(self, rng_seed):
        return rng_seed  # the same streams as one device

    def mean(self, tree):
        return tree  # means over the global arrays are already all-reduces

    def place(self, params, opt_state, est_state, data_values):
        return (self.replicate(params), self.replicate(opt_state), self.shard_rows(est_state),
                self.replicate(data_values))


def make_placement(devices):
    """``fit_unnormalized``'s placement for ``devices=`` (None: one device, no placement)."""
    return None if devices is None else ShardedPlacement(make_mesh(devices))
