"""Compiling set-up code quickly: structure probes, samplers' checks, initial chains.

Code that a fit runs once or a few times before its first update is compiled by the
NumPyro backend with XLA's backend optimisations off (``JaxOps._quick_jit``: about 40% of
the compile time, the same values); a backend without such a compiler uses ``ops.jit``.
"""

__all__ = ["quick_jit"]


def quick_jit(ops, fn):
    """``fn`` compiled for a few calls at set-up: the backend's quick compiler, or ``ops.jit``."""
    return getattr(ops, "_quick_jit", ops.jit)(fn)
