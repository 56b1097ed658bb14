"""Draws made while running a model: the first trace's, and joint draws from the base.

A fit's set-up runs the model once, eagerly, to learn its sites (shapes, dtypes, supports,
plates). Its latent sites are drawn there only for their shapes: the values are not used.
Drawn eagerly, each distribution's sampler is one XLA compilation at full optimisation
(JAX's Bernoulli sampler alone takes about 0.6 CPU s); :class:`QuickDraws` makes each draw
one call of :func:`~ebm_ppl_numpyro.ops.quick_jit` instead (backend optimisations off), kept
for later models with the same distribution structure and shapes, from keys made on the
host (NumPyro's seed handler would split one, a compilation of its own).

:class:`AncestralDraws` draws every site, observed ones included, given the values drawn
before it: ``sample_base``'s joint draws from the base measure (AIS's start, ``init="base"``).
"""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

from .ops import quick_jit

__all__ = ["AncestralDraws", "QuickDraws"]

_DRAWS = {}  # sample_shape -> quick_jit(distribution, key -> (value, intermediates))


def _draw(sample_shape):
    if sample_shape not in _DRAWS:
        _DRAWS[sample_shape] = quick_jit(lambda fn, key: fn.sample_with_intermediates(key, sample_shape))
    return _DRAWS[sample_shape]


class QuickDraws(numpyro.primitives.Messenger):
    """Inside ``handlers.seed``: draw each latent site with one quickly compiled call per
    distribution, from a key made on the host (the values are only looked at for their
    shapes), and give plates a host key too, so that the seed handler splits no key (an
    XLA compilation of its own); a site this cannot draw is left to the seed handler."""

    def __init__(self, fn=None):
        self.count = 0
        super().__init__(fn)

    def _host_key(self):
        self.count += 1
        return np.array([0, self.count], np.uint32)

    def process_message(self, msg):
        if msg["type"] == "plate" and msg["kwargs"].get("rng_key", 0) is None:
            msg["kwargs"]["rng_key"] = self._host_key()
        if msg["type"] != "sample" or msg["value"] is not None or msg.get("is_observed") or msg["args"]:
            return
        if not isinstance(msg["fn"], dist.Distribution) or "rng_key" not in msg["kwargs"]:
            return
        key = msg["kwargs"]["rng_key"]
        key = self._host_key() if key is None else key
        try:
            value, intermediates = _draw(tuple(msg["kwargs"].get("sample_shape", ())))(msg["fn"], key)
        except Exception:  # a distribution that is not a pytree, ...: drawn as usual
            return
        msg["kwargs"]["rng_key"], msg["value"], msg["intermediates"] = key, value, intermediates


class AncestralDraws(numpyro.primitives.Messenger):
    """Draw every site of ``transforms`` (site name -> its bijection from unconstrained
    space), observed ones included, from its distribution given the values drawn before
    it: one joint draw from the model's base measure (its sample sites, factors left out),
    the draws that ``log_density_parts``' log base is the density of.

    ``keys`` holds one key for each sample or ``prng_key`` message (an upper bound: one per
    site of the model's trace): no key is split inside the model. A site whose distribution
    has no sampler (an improper base such as ``ImproperUniform``) is drawn uniformly in
    (-2, 2) in unconstrained space, like the frameworks' ``init_to_uniform``.
    """

    def __init__(self, fn, keys, transforms):
        self.keys, self.transforms, self.count = keys, transforms, 0
        super().__init__(fn)

    def _key(self):
        if self.count >= len(self.keys):
            raise RuntimeError("AncestralDraws: the model made more random draws than its first trace")
        self.count += 1
        return self.keys[self.count - 1]

    def process_message(self, msg):
        if msg["type"] == "plate" and msg["kwargs"].get("rng_key", 0) is None:  # not subsampled: never read
            msg["kwargs"]["rng_key"] = np.array([0, 0], np.uint32)
        elif msg["type"] == "prng_key" and msg["value"] is None:
            msg["value"] = self._key()
        elif msg["type"] == "sample" and msg["name"] in self.transforms:
            key, fn = self._key(), msg["fn"]
            sample_shape = tuple(msg["kwargs"].get("sample_shape", ()))
            try:
                msg["value"] = fn.sample(key, sample_shape)
            except NotImplementedError:  # an improper base
                u = jax.random.uniform(key, fn.shape(sample_shape), minval=-2.0, maxval=2.0)
                msg["value"] = self.transforms[msg["name"]](u)
            msg["kwargs"]["rng_key"], msg["is_observed"] = key, False
