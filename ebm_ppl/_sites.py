"""Framework-free pieces of turning a model into a ``ModelInfo`` (shared by both backends)."""

__all__ = ["Transform", "base_constraint", "match_leaves", "check_leaf_shape", "explain_failure",
           "check_covariates", "split_covariates", "check_factor_shape", "differs", "check_no_obs_mask",
           "latent_outside_plate", "check_data_leaves", "check_param_names", "site_table", "leaf_converters",
           "check_no_subsample"]


class Transform:
    """A bijection from unconstrained space (the framework's ``biject_to(support)``) with an
    ``is_identity`` flag, so identity transforms cost nothing in the hot loop."""

    def __init__(self, t, is_identity):
        self.t, self.is_identity = t, is_identity

    def __call__(self, x):
        return self.t(x)

    def inv(self, y):
        return self.t.inv(y)

    def log_abs_det_jacobian(self, x, y):
        return self.t.log_abs_det_jacobian(x, y)


def base_constraint(c):
    """The innermost constraint of ``independent(...)`` wrappers."""
    while hasattr(c, "base_constraint"):
        c = c.base_constraint
    return c


def match_leaves(observed, data):
    """Map data leaves to observed sites (dicts with "name" and "value"): by identity, then
    by name (dict data), then the only observed site (array data)."""
    leaves = data if isinstance(data, dict) else {"data": data}
    mapping = {}
    for key, leaf in leaves.items():
        hits = [s for s in observed if s["value"] is leaf]
        if not hits and isinstance(data, dict):
            hits = [s for s in observed if s["name"] == key]
        if not hits and not isinstance(data, dict) and len(observed) == 1:
            hits = observed
        if not hits:
            raise ValueError(
                f"data leaf {key!r} is not the obs of any sample site of the model "
                f"(observed sites: {[s['name'] for s in observed]})"
            )
        mapping[key] = hits[0]["name"]
    return mapping


def check_covariates(covariates, data):
    """``covariates`` (None, a name, or names of data leaves) as a tuple of leaf names,
    checked against the data: each must be a leaf of a dict batch, and some leaf must be
    left over for the modelled (observed) sites."""
    if covariates is None:
        return ()
    names = (covariates,) if isinstance(covariates, str) else tuple(covariates)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"covariates must be names (str) of data leaves, got {covariates!r}")
    if not names:
        return ()
    if not isinstance(data, dict):
        raise ValueError(f"covariates={names!r}: covariates are named leaves of a dict batch, but the data "
                         "is one array; pass data as a dict, e.g. {'x': x, 'y': y}")
    unknown = [n for n in names if n not in data]
    if unknown:
        raise ValueError(f"covariates: {unknown} not a data leaf (data leaves: {sorted(data)})")
    if len(set(names)) == len(data):
        raise ValueError(f"covariates={names!r} names every data leaf: at least one leaf must be the obs "
                         "of a sample site (the modelled part)")
    return tuple(dict.fromkeys(names))


def split_covariates(data, covariates, trace_site_names, observed):
    """``(data without the covariate leaves, {covariate: leaf})``; a covariate that is also
    a sample site's obs or name raises, naming it (it would be both input and modelled)."""
    if not covariates:
        return data, {}
    for name in covariates:
        leaf = data[name]
        clash = [s["name"] for s in observed if s["value"] is leaf] + ([name] if name in trace_site_names else [])
        if clash:
            raise ValueError(f"covariates: data leaf {name!r} is the obs or name of sample site {clash[0]!r}; "
                             "a covariate is an input, not modelled: drop it from covariates or from the model's "
                             "sample sites")
    return ({k: v for k, v in data.items() if k not in covariates},
            {k: data[k] for k in covariates})


def check_leaf_shape(key, shape, site_name, fn_shape, event_shape, num_rows=None):
    """A data leaf must broadcast-match its site's shape, examples on axis 0. ``num_rows``:
    the rows the site was traced on, where that was the first rows of the leaf (the
    site's examples axis then stands for all of the leaf's)."""
    shape, fn_shape = tuple(shape), tuple(fn_shape)
    if num_rows is not None and shape and len(fn_shape) == len(shape) and fn_shape[0] == num_rows:
        fn_shape = shape[:1] + fn_shape[1:]
    if len(shape) < 1 or len(fn_shape) > len(shape) or any(
        f not in (1, s) for f, s in zip(fn_shape[::-1], shape[::-1])
    ):
        raise ValueError(
            f"data leaf {key!r} has shape {shape}, which does not fit site {site_name!r} "
            f"of shape {fn_shape} (event shape {tuple(event_shape)}); examples go on axis 0"
        )


def explain_failure(recorded_sites, data, check_leaf, error, full=None):
    """Re-raise a model's failed first run as a ValueError: naming the site whose data does
    not fit when one of the sites recorded before the failure explains it (``check_leaf``
    raises), else naming the data's shapes. ``full``: the whole data set where the model
    ran on its first rows (``data``); the leaves are checked and named in full."""
    leaves = data if isinstance(data, dict) else {"data": data}
    fulls = leaves if full is None else full if isinstance(full, dict) else {"data": full}
    for key, leaf in leaves.items():
        for site in recorded_sites:
            if site["is_observed"] and (site["value"] is leaf or site["name"] == key):
                check_leaf(key, fulls[key], site)
    shapes = {k: tuple(v.shape) for k, v in fulls.items()}
    rows = next(iter(leaves.values())).shape[0]
    where = "" if rows == next(iter(fulls.values())).shape[0] else f" (its first {rows} rows)"
    raise ValueError(
        f"running the model on data of shape {shapes}{where} failed: {type(error).__name__}: {error}"
    ) from error


class Same:
    """A cache-key part that compares by identity (and keeps the object alive, so that its
    id is not reused): models, model arguments and optimizer objects."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, Same) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


def check_factor_shape(name, shape, frames, plate, num_rows, data_rows=None):
    """A factor inside the data plate has one value per example: its shape has the plate's
    size at the plate's dimension and no dimension that is not one of its plates (a scalar
    would be broadcast to every example, an extra dimension silently summed).

    ``shape`` is the shape of the log-factor as the model wrote it (before the plates
    broadcast it), ``frames`` the site's plates as ``(name, dim, size)`` and ``plate`` the
    data plate's ``(name, dim)``. ``data_rows``: the data's rows, where the model was
    traced on its first ``num_rows`` (the message names the data's own number)."""
    plate_name, plate_dim = plate
    shape = tuple(shape)
    want = [1] * max(len(shape), -plate_dim)
    for _, dim, size in frames:
        if dim is not None and -dim <= len(want):
            want[dim] = size
    want[plate_dim] = num_rows
    padded = (1,) * (len(want) - len(shape)) + shape
    ok = len(shape) >= -plate_dim and shape[plate_dim] == num_rows and all(
        s == w or (s == 1 and i != len(want) + plate_dim) for i, (s, w) in enumerate(zip(padded, want)))
    if not ok:
        if data_rows is not None and data_rows != num_rows:  # shown as on all of the data's rows
            want[plate_dim] = data_rows
            if len(shape) >= -plate_dim and shape[plate_dim] == num_rows:
                shape = shape[:len(shape) + plate_dim] + (data_rows,) + shape[len(shape) + plate_dim + 1:]
        raise ValueError(
            f"factor {name!r} has shape {shape} inside the data plate {plate_name!r}, but a factor "
            f"there must have one value per example: expected shape {tuple(want)} (the plate's "
            f"{want[plate_dim]} examples at dimension {plate_dim}, every other dimension one of its plates). "
            "A scalar would be added to every example and extra dimensions silently summed: sum "
            "them per example yourself, or put a term of the parameters alone (a penalty, a log "
            "prior) outside the plate"
        )


def differs(rows):
    """Whether a per-row array (numpy) takes more than one value across its rows."""
    import numpy as np

    rows = np.asarray(rows, dtype=np.float64).reshape((len(rows), -1))
    return not np.allclose(rows, rows[:1], rtol=1e-6, atol=1e-9, equal_nan=True)


def check_no_obs_mask(sample_sites):
    """Refuse ``obs_mask`` (partially observed data): the frameworks split such a site into
    ``NAME_observed`` and a latent ``NAME_unobserved``, which ebm_ppl does not impute.

    ``sample_sites`` maps each sample site's name to whether it is observed.
    """
    for name, observed in sample_sites.items():
        base = name[: -len("_unobserved")]
        if name.endswith("_unobserved") and not observed and sample_sites.get(base + "_observed"):
            raise NotImplementedError(
                f"sample site {base!r} uses obs_mask (partially observed data): not supported by "
                "ebm_ppl; pass complete data, or model the missing entries as latent sites")


def latent_outside_plate(name, plate):
    """The error for a latent site sampled outside the data plate (both backends)."""
    return NotImplementedError(
        f"latent site {name!r} is not inside the data plate" + ("" if plate is None else f" {plate[0]!r}")
        + ": ebm_ppl needs one value of each latent site per example (sample it inside the plate)")


def check_no_subsample(plates):
    """Refuse a plate that subsamples (``subsample_size=`` smaller than its size, or given
    indices), naming it, ``subsample_size`` and ``batch_size=``, before anything changes.

    ``plates`` holds ``(name, size, subsample_size, number of indices)`` for each plate of
    the model's trace (``subsample_size`` None where the plate was given none). ebm_ppl
    evaluates the model on its own rows (chains, minibatches, enumerated states: any
    number of them), so a plate cannot pick its rows; Pyro's plate also insists that its
    indices number exactly ``subsample_size``, which rules out supplying them.
    """
    for name, size, subsample_size, num_indices in plates:
        if (subsample_size is None or subsample_size == size) and num_indices == size:
            continue
        b = subsample_size if subsample_size is not None else num_indices
        raise NotImplementedError(
            f"plate {name!r} has subsample_size={b} (of size {size}): ebm_ppl draws the minibatches itself and "
            f"runs the model on whole batches, chains and enumerated states; drop subsample_size (write "
            f"plate({name!r}, x.shape[0]) and use x as it comes) and pass batch_size={b} to fit_unnormalized "
            "(or Trainer)")


# What both backends' ``compile_model`` share once the model has been traced: checking the
# data leaves and parameters, the table of sites, and the data <-> site values mapping.
# ``nodes`` is the trace as a dict site name -> site (NumPyro's trace, Pyro's trace.nodes).


def check_data_leaves(nodes, leaves, mapping, covariates, check_leaf, has_nonfinite):
    """Check every data leaf against its site (``check_leaf(key, leaf, site)`` raises) and
    every covariate for NaN or inf (``has_nonfinite(leaf)``: a float leaf that is not finite)."""
    for key, name in mapping.items():
        if key in covariates:
            if has_nonfinite(leaves[key]):
                raise ValueError(f"data leaf {key!r} (a covariate) contains NaN or inf")
        else:
            check_leaf(key, leaves[key], nodes[name])


def check_param_names(names, params, how):
    """The model must have parameters (``how``: the framework's ways of declaring one), and
    given ``params`` must name every one of them."""
    if not names:
        raise ValueError(f"the model has no parameters ({how}): nothing to fit")
    if params is not None:
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"params is missing parameter(s) {missing} of the model")


def site_table(nodes, leaves, mapping, covariates, latent_names, site_info):
    """``(observed site names, {site name: SiteInfo})``: the observed sites first, described
    from their data leaves, then the latent ones from their traced values
    (``site_info(name, site, value, is_observed)`` builds one entry)."""
    observed_names = list(dict.fromkeys(v for k, v in mapping.items() if k not in covariates))
    sites = {}
    for name in observed_names:
        key = next(k for k, v in mapping.items() if v == name)
        sites[name] = site_info(name, nodes[name], leaves[key], True)
    for name in latent_names:
        sites[name] = site_info(name, nodes[name], nodes[name]["value"], False)
    return observed_names, sites


def leaf_converters(data, mapping, observed_names):
    """``(data_to_values, values_to_data)`` of :class:`~ebm_ppl.backend.ModelInfo`: a batch
    shaped like ``data`` (an array or a dict of leaves) to ``{site (or covariate): array}``
    and back, through ``mapping`` (data leaf -> site name, covariates to themselves)."""
    leaves = data if isinstance(data, dict) else {"data": data}

    def data_to_values(batch):
        b = batch if isinstance(batch, dict) else {"data": batch}
        return {mapping[k]: v for k, v in b.items()}

    def values_to_data(values):
        if isinstance(data, dict):
            return {k: values[mapping[k]] for k in leaves}
        return values[observed_names[0]]

    return data_to_values, values_to_data
