"""The latent draws of a model's first trace, each one compiled call built fast.

A fit's set-up runs the model once, eagerly, to learn its sites (shapes, dtypes, supports,
plates). Its latent sites are drawn there only for their shapes: the values are not used.
Drawn eagerly, each distribution's sampler is one XLA compilation at full optimisation
(JAX's Bernoulli sampler alone takes about 0.6 CPU s); :class:`QuickDraws` makes each draw
one call of :func:`~ebm_ppl_numpyro.ops.quick_jit` instead (backend optimisations off), kept
for later models with the same distribution structure and shapes.
"""

import numpyro
import numpyro.distributions as dist

from .ops import quick_jit

__all__ = ["QuickDraws"]

_DRAWS = {}  # sample_shape -> quick_jit(distribution, key -> (value, intermediates))


def _draw(sample_shape):
    if sample_shape not in _DRAWS:
        _DRAWS[sample_shape] = quick_jit(lambda fn, key: fn.sample_with_intermediates(key, sample_shape))
    return _DRAWS[sample_shape]


class QuickDraws(numpyro.primitives.Messenger):
    """Draw the latent sites the seed handler inside it has given a key with one quickly
    compiled call per distribution; any site this cannot handle is drawn as usual."""

    def process_message(self, msg):
        if msg["type"] != "sample" or msg["value"] is not None or msg.get("is_observed") or msg["args"]:
            return
        key, shape = msg["kwargs"].get("rng_key"), msg["kwargs"].get("sample_shape", ())
        if key is None or not isinstance(msg["fn"], dist.Distribution):
            return
        try:
            msg["value"], msg["intermediates"] = _draw(tuple(shape))(msg["fn"], key)
        except Exception:  # a distribution that is not a pytree, ...: NumPyro draws it as usual
            msg["value"] = None
