"""Draws from :func:`~ebm_ppl.sample` as ArviZ data (:func:`to_arviz`), with ArviZ, an
optional dependency (``pip install "ebm_ppl[arviz]"``) imported only when called."""

import numpy as np

from ._doc import doc
from .plots import as_numpy
from .plots import require

__all__ = ["to_arviz"]


def _by_chain(draws, num_chains):
    """``sample``'s draws, name -> ``(num_samples, ...)``, as name -> ``(chain, draw, ...)``
    numpy arrays.

    :func:`~ebm_ppl.sample` runs ``num_chains`` chains and records them in rounds: rows
    ``r * num_chains`` to ``(r + 1) * num_chains - 1`` are the chains' states after round
    ``r``, so chain ``c``'s draws are rows ``c, c + num_chains, c + 2 * num_chains, ...``.
    """
    if isinstance(num_chains, bool) or not isinstance(num_chains, (int, np.integer)) or num_chains < 1:
        raise ValueError(f"num_chains must be an integer >= 1, got {num_chains!r}")
    if not hasattr(draws, "items"):
        draws = {"x": draws}
    out = {}
    for name, value in draws.items():
        a = as_numpy(value)
        n = a.shape[0] if a.ndim else 0
        if n == 0 or n % num_chains:
            raise ValueError(
                f"to_arviz: site {name!r} has {n} draws, not a positive multiple of num_chains={num_chains}; "
                "pass the num_chains given to ebm_ppl.sample, whose num_samples must be a multiple of it "
                "(the last round of a sample is cut short otherwise)")
        out[name] = np.swapaxes(a.reshape((n // num_chains, num_chains) + a.shape[1:]), 0, 1)
    return out


_TO_ARVIZ_DOC = """Draws from :func:`sample` as ArviZ data, grouped by chain, so that
``arviz.summary`` reports each site's mean, R-hat and effective sample size.

:func:`sample` records its ``num_chains`` chains in rounds (rows ``0 .. num_chains - 1``
are every chain's first draw, then their second draw, ...): chain ``c`` is rows
``c, c + num_chains, ...``. This reshapes every site to ``(chain, draw, ...)`` accordingly,
so ``num_chains`` must be the value given to :func:`sample` (its default, 100, is this
function's default too) and the number of draws a multiple of it. Needs ArviZ
(``pip install "ebm_ppl[arviz]"``).

Parameters
----------
draws : dict or array
    What :func:`sample` returned: site name -> ``(num_samples, ...)`` array (torch, JAX
    or numpy); a single array is named ``"x"``.
num_chains : int
    The number of chains the draws came from (``sample``'s ``num_chains``).

Returns
-------
arviz.InferenceData
    With a ``posterior`` group holding each site as ``(chain, draw, ...)``. On ArviZ 1.x,
    whose ``xarray.DataTree`` replaced ``InferenceData``, the ``DataTree`` that
    ``arviz.from_dict`` returns.

Raises
------
ImportError
    ArviZ is not installed.
ValueError
    ``num_chains`` is not a positive integer, or a site's number of draws is not a positive
    multiple of it.

Examples
--------
>>> draws = ebm_ppl.sample(model, result.params, x[:1], num_samples=2000, num_chains=4)  # doctest: +SKIP
>>> import arviz as az  # doctest: +SKIP
>>> az.summary(ebm_ppl.to_arviz(draws, num_chains=4))  # doctest: +SKIP
"""


@doc(_TO_ARVIZ_DOC)
def to_arviz(draws, num_chains=100):
    posterior = _by_chain(draws, num_chains)
    az = require("arviz", "arviz", "to_arviz")
    if int(az.__version__.split(".")[0]) >= 1:  # ArviZ 1.x: {group: {name: array}}
        return az.from_dict({"posterior": posterior})
    return az.from_dict(posterior=posterior)
