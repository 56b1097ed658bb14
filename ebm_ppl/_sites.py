"""Framework-free pieces of turning a model into a ``ModelInfo`` (shared by both backends)."""

__all__ = ["Transform", "base_constraint", "match_leaves", "check_leaf_shape", "explain_failure"]


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


def check_leaf_shape(key, shape, site_name, fn_shape, event_shape):
    """A data leaf must broadcast-match its site's shape, examples on axis 0."""
    shape, fn_shape = tuple(shape), tuple(fn_shape)
    if len(shape) < 1 or len(fn_shape) > len(shape) or any(
        f not in (1, s) for f, s in zip(fn_shape[::-1], shape[::-1])
    ):
        raise ValueError(
            f"data leaf {key!r} has shape {shape}, which does not fit site {site_name!r} "
            f"of shape {fn_shape} (event shape {tuple(event_shape)}); examples go on axis 0"
        )


def explain_failure(recorded_sites, data, check_leaf, error):
    """Re-raise a model's failed first run as a ValueError: naming the site whose data does
    not fit when one of the sites recorded before the failure explains it (``check_leaf``
    raises), else naming the data's shapes."""
    leaves = data if isinstance(data, dict) else {"data": data}
    for key, leaf in leaves.items():
        for site in recorded_sites:
            if site["is_observed"] and (site["value"] is leaf or site["name"] == key):
                check_leaf(key, leaf, site)
    shapes = {k: tuple(v.shape) for k, v in leaves.items()}
    raise ValueError(
        f"running the model on data of shape {shapes} failed: {type(error).__name__}: {error}"
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
