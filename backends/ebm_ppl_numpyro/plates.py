"""The plates of a traced NumPyro model, as :func:`ebm_ppl._sites.check_no_subsample` reads them."""

__all__ = ["plates"]


def plates(msgs):
    """``(name, size, subsample_size, number of indices)`` of each plate in ``msgs``.

    Parameters
    ----------
    msgs : iterable of dict
        Trace sites or recorded messages; a plate is a message of type ``"plate"``.

    Returns
    -------
    list of tuple
    """
    return [(m["name"], m["args"][0], m["args"][1], len(m["value"]))
            for m in msgs if m["type"] == "plate" and m["value"] is not None]
