"""What ``resume=`` must agree with, and the state a fit starts from."""


import numpy as np

from .._tree import describe
from .._validate import check_resume_state


def _signature(info, opt):
    """What ``resume=`` checks: parameters (structure, shapes, constraints), sites
    (shapes, supports, dtypes) and the optimizer's kind; JSON-able, saved with the state."""
    constraints = info.param_constraints or {}
    params = {n: [[list(d) for d in describe(u)], constraints.get(n)] for n, u in info.init_params.items()}
    sites = {n: [list(s.shape), s.support, str(s.dtype).replace("torch.", "")] for n, s in info.sites.items()}
    return {"params": params, "sites": sites, "optimizer": opt.kind}


def _first_difference(saved, wanted):
    """The first leaf where two trees' :func:`~ebm_ppl._tree.describe` lists differ, as text."""
    return _first_described_difference(describe(saved), describe(wanted))


def _first_described_difference(saved, wanted):
    """:func:`_first_difference` of two :func:`~ebm_ppl._tree.describe` lists."""
    for (path_a, a), (path_b, b) in zip(saved, wanted):
        if (path_a, a) != (path_b, b):
            return f"at {path_a or 'the top'} the result has {a}, but at {path_b or 'the top'} this fit needs {b}"
    if len(saved) != len(wanted):
        return f"the result's state has {len(saved)} leaves, this fit's {len(wanted)}"
    return None


def _check_signature(saved, current):
    if saved is None:
        return
    for kind in ("params", "sites"):
        a, b = saved[kind], current[kind]
        what = "parameters" if kind == "params" else "sites"
        if sorted(a) != sorted(b):
            raise ValueError(f"resume: the result's {what} {sorted(a)} are not the model's {sorted(b)}")
        for n in sorted(a):
            if a[n] != b[n]:
                label = "parameter" if kind == "params" else "site"
                if kind == "params" and a[n][0] != b[n][0]:
                    raise ValueError(f"resume: {label} {n!r} has shape/structure {a[n][0]} in the result but "
                                     f"{b[n][0]} in the model")
                if kind == "params":
                    raise ValueError(f"resume: {label} {n!r} has constraint {a[n][1]} in the result but "
                                     f"{b[n][1]} in the model")
                raise ValueError(f"resume: {label} {n!r} is (shape, support, dtype) {tuple(a[n])} in the result "
                                 f"but {tuple(b[n])} in the model")
    if saved.get("optimizer") and current.get("optimizer") and saved["optimizer"] != current["optimizer"]:
        raise ValueError(f"resume: the result's optimizer state is from {saved['optimizer']}, but the optimizer "
                         f"given is {current['optimizer']}: pass an optimizer of the same kind")


def _check_resume(resume, ops, info, opt, estimator, init_chains, data_values, like, signature):
    """Everything ``resume=`` must agree with, checked before anything changes."""
    st = resume.state
    if type(st.estimator) is not type(estimator) or vars(st.estimator) != vars(estimator):
        raise ValueError(f"resume: the result was fitted with {st.estimator!r}, not {estimator!r}")
    _check_signature(st.signature, signature)
    layout = describe(ops.eval_shape(init_chains, ops.seed(0, like), data_values))
    check_state_fits(st, ops, info, opt, like, layout, "resume", "the result's",
                     f"this model and {estimator!r} (another batch_size, sampler or model?)")


def check_state_fits(st, ops, info, opt, like, layout, who, whose, chains_of):
    """What ``resume=`` and :meth:`Trainer.update` check of a :class:`FitState`, naming
    ``who`` in the message: the model's parameter names and shapes, chains of the
    estimator-state ``layout`` (a :func:`~ebm_ppl._tree.describe` list; ``chains_of`` says
    whose), the state's fields (:func:`~ebm_ppl._validate.check_resume_state`) and the
    optimizer state's fit."""
    if not isinstance(st.params, dict) or sorted(st.params) != sorted(info.init_params):
        got = sorted(st.params) if isinstance(st.params, dict) else type(st.params).__name__
        raise ValueError(f"{who}: {whose} parameters {got} are not the model's {sorted(info.init_params)}")
    diff = _first_difference(st.params, info.init_params)
    if diff:
        raise ValueError(f"{who}: the parameters do not fit the model: {diff}")
    diff = _first_described_difference(describe(st.estimator_state), layout)
    if diff:
        raise ValueError(f"{who}: the chains do not fit {chains_of}: {diff}")
    check_resume_state(st, info, ops, like)
    opt.check_state(st.optimizer_state, info.init_params, num_updates=st.num_updates)


def _start_state(ops, be, info, opt, init_chains, data_values, like, rng_seed, resume, placement=None,
                 replace_params=False):
    """(params, optimizer state, estimator state, key, data key, updates done, epoch
    permutation, offset) to start from: fresh, or the validated ``resume`` state.

    The minibatch stream comes from ``rng_seed`` alone (every rank of torch.distributed
    draws the same minibatches); the sampling stream from ``placement.sampling_seed``
    (rank 0 and JAX devices: ``rng_seed`` itself). ``replace_params``: the optimizer's
    own copy of the parameters (NumPyro's) is replaced by ``resume.state.params``
    (Trainer.update honours an edited state) instead of being checked against them."""
    if resume is not None:
        st = resume.state
        params = be.restore_params(info, st.params)
        opt_state = opt.init(params, state=st.optimizer_state, replace_params=True) if replace_params else \
            opt.init(params, state=st.optimizer_state)
        est_state = ops.copy_tree(st.estimator_state)
        key, data_key = ops.key_from_state(st.rng_key, like), ops.key_from_state(st.data_key, like)
        perm = None if st.epoch_perm is None else np.array(st.epoch_perm)
        return params, opt_state, est_state, key, data_key, st.num_updates, perm, st.epoch_offset
    params = info.init_params
    opt_state = opt.init(params)
    key = ops.seed(rng_seed, like)
    data_key = ops.fork(key)  # an independent stream for minibatch shuffling
    if placement is not None and placement.sampling_seed(rng_seed) != rng_seed:
        key = ops.seed(placement.sampling_seed(rng_seed), like)  # this rank's own stream
    key, key_init = ops.split(key, 2)
    est_state = init_chains(key_init, data_values)
    return params, opt_state, est_state, key, data_key, 0, None, 0
