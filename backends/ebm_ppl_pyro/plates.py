"""The plates of a traced Pyro model, as :func:`ebm_ppl._sites.check_no_subsample` reads them."""

from pyro.poutine.util import site_is_subsample

__all__ = ["plates"]


def plates(sites):
    """``(name, size, subsample_size, number of indices)`` of each plate in ``sites``.

    Parameters
    ----------
    sites : iterable of dict
        Trace sites or recorded messages; a plate appears as its subsample site.

    Returns
    -------
    list of tuple
    """
    return [(s["name"], s["fn"].size, s["fn"].subsample_size, len(s["value"]))
            for s in sites if site_is_subsample(s) and s["value"] is not None]
