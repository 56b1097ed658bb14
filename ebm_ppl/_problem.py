"""Glue between a compiled model and the algorithms: positions in sampler space.

Samplers move discrete sites on their raw values and continuous sites in unconstrained
space; :class:`Problem` converts between the two and builds the per-chain log density
in sampler space (log-Jacobians included).
"""

from typing import Callable, NamedTuple

import numpy as np

from ._one_hot import is_one_hot, random_states
from .backend import detect_backend, get_backend
from .samplers._numerics import Target, differentiate

__all__ = ["Problem", "Probes", "KernelRun", "run_kernel", "compile_problem", "PROBE_SEED"]

PROBE_SEED = 20_021  # structure probes for "auto" do not depend on the caller's rng_seed


class KernelRun(NamedTuple):
    """What :func:`run_kernel` returns."""

    position: dict  # sampler space, one row per chain
    aux: object  # the kernel's state (adapted step sizes, ...)
    acceptance_rate: object  # the mean over the transitions
    log_density: object = None  # log p̃ per chain of ``position`` (``logged=True`` when the kernel has it)


class Probes(NamedTuple):
    """Structure probes: ``logdensity(params, position)`` (per chain, sampler space) with
    random ``params`` and random ``positions``, one of each per probe. Checks that run
    on them are compiled once and called for every probe (``ops.jit`` with the
    parameters as an argument)."""

    logdensity: Callable
    params: list
    positions: list
    memo: dict  # results of checks already run on these probes


class Problem:
    """A compiled model with its backend ops (built once per call of the public API)."""

    def __init__(self, ops, info, kernel=None, positive_kernel=None):
        self.ops = ops
        self.info = info
        self.sites = info.sites
        self.latent_names = tuple(n for n, s in info.sites.items() if not s.is_observed)
        # conditional models: inputs carried in every position under their own names, never moved
        self.covariates = tuple(info.covariates or ())
        self.kernel = kernel  # negative phase: moves every site
        self.positive_kernel = positive_kernel  # positive phase: moves the latent sites
        self.rao_blackwell = None  # (site, lo, hi): gradients at E[site | rest] (see ebm_ppl._rao_blackwell)

    def probe(self, rng_key):
        """A memoized ``probe()`` for :func:`~ebm_ppl.samplers.base.build_kernel`."""
        cache = []

        def probe():
            if not cache:
                cache.append(self.structure_probes(rng_key))
            return cache[0]

        return probe

    def structure_probes(self, rng_key, num_probes=2, num_states=8):
        """Log densities at random parameters (init + N(0, 1) noise, unconstrained) and
        random states (uniform over discrete supports, U(-2, 2) unconstrained), for
        :func:`ebm_ppl.samplers.structure.conditional_blocks` and the checks of
        :class:`~ebm_ppl.samplers.BlockGibbs`; see :class:`Probes`. The draws are made on
        the host with numpy (seeded by ``PROBE_SEED``: they do not depend on the caller's
        seed), so no compiled code is needed to make them."""
        ops = self.ops
        rng = np.random.default_rng(PROBE_SEED)
        like = ops.first_leaf(self.info.init_params)
        params, positions = [], []
        for _ in range(num_probes):
            params.append(ops.map_host(lambda a: a + rng.standard_normal(a.shape), self.info.init_params))
            position = self.host_states(rng, num_states, like)
            for name, leaf in (self.info.covariates or {}).items():  # random rows of the inputs
                position[name] = leaf[ops.from_numpy(rng.integers(leaf.shape[0], size=num_states), ops.int_dtype,
                                                     like)]
            positions.append(position)

        def logdensity(p, position):
            return self.logdensity_fn(p)(position)

        return Probes(logdensity, params, positions, {})

    def host_states(self, rng, num_states, like):
        """``num_states`` sampler-space states of every site drawn on the host with the numpy
        generator ``rng``: uniform over discrete supports, U(-2, 2) unconstrained."""
        ops, position = self.ops, {}
        for name, site in self.sites.items():
            shape = (num_states,) + tuple(site.shape)
            if is_one_hot(site):
                position[name] = ops.from_numpy(random_states(rng, site, num_states), site.dtype, like)
            elif site.is_discrete:
                values = np.asarray(site.values if site.values is not None else (0,))
                position[name] = ops.from_numpy(values[rng.integers(len(values), size=shape)], site.dtype, like)
            else:
                position[name] = ops.from_numpy(rng.uniform(-2.0, 2.0, size=shape), like.dtype, like)
        return position

    def init_positive_aux(self, rng_key, batch_size):
        """The positive kernel's initial state (its adapted step sizes, ...). The kernel's
        ``init`` reads shapes and dtypes from a position: states made on the host serve
        (the positive phase draws its own start at every update), so no random draw is
        compiled for it."""
        if not self.latent_names:
            return ()
        like = self.ops.first_leaf(self.info.init_params)
        position = self.host_states(np.random.default_rng(PROBE_SEED), batch_size, like)
        position = {n: v if self.sites[n].is_discrete else self.ops.astype(v, self.sites[n].dtype)
                    for n, v in position.items()}  # as init_position has them
        return self.positive_kernel.init(self.ops.shard_rows(position))

    def positive(self, rng_key, aux, params, batch_values, num_steps, start=None):
        """The positive phase: latent sites drawn given the batch (observed sites clamped).

        Latent chains start from the sites' base distributions at every update, or from
        ``start`` (latent site -> sampler-space values, one row per example: persistent
        per-example chains), and run ``num_steps`` transitions of the positive kernel (one
        exact block-Gibbs step already draws an RBM's hidden layer from p(h | v)). Returns
        the sampler-space position (batch + latents) and the kernel's adapted state.
        """
        observed = self.to_internal(batch_values)
        if not self.latent_names:
            return observed, aux
        key_init, key_run = self.ops.split(rng_key, 2)
        like = next(iter(batch_values.values()))
        num = like.shape[0]
        if start is not None:
            position = dict(start)
        elif self.positive_kernel.redraws_all:
            # the first step draws every latent coordinate afresh given the batch, whatever
            # its current value (one block-Gibbs block): a draw from the base is wasted work
            position = {n: self.ops.zeros((num,) + tuple(self.sites[n].shape), self.sites[n].dtype, like)
                        for n in self.latent_names}
        else:
            position = self.init_position(key_init, num, "base")
        position.update(observed)
        run = run_kernel(self.ops, self.positive_kernel, key_run, position, aux, self.logdensity_fn(params),
                         num_steps)
        return run.position, run.aux

    def logdensity_fn(self, params):
        """Per-chain log p̃ of a sampler-space position (Jacobians of continuous sites included)."""
        info = self.info

        def logdensity(position):
            values, log_jac = self.from_internal(position, with_jacobian=True)
            return info.log_density(params, values) + log_jac

        def value_and_grad(position, names, value=True):
            """(log p̃ per chain, {n: ∂ Σ log p̃ / ∂ position[n]}) with the backend's
            ``log_density_grad`` (see ``ModelInfo``) where the sites ``names`` move on their
            own values (discrete sites, real sites), else by differentiating ``logdensity``.
            ``value=False``: the log density may be None (the gradient alone is used)."""
            if any(not _is_identity(self.sites[n]) for n in names):
                return differentiate(self.ops, logdensity, position, names)
            values, log_jac = self.from_internal(position, with_jacobian=True)
            ld, grads = info.log_density_grad(params, values, names, value=value)
            return (None if ld is None else ld + log_jac), grads

        return Target(logdensity, value_and_grad)

    def from_internal(self, position, with_jacobian=False):
        values, log_jac = {}, 0.0
        for name, x in position.items():
            site = self.sites.get(name)  # None: a covariate, passed through
            if site is None or site.transform is None or getattr(site.transform, "is_identity", False):
                values[name] = x
                continue
            y = site.transform(x)
            values[name] = y
            if with_jacobian:
                ladj = site.transform.log_abs_det_jacobian(x, y)
                log_jac = log_jac + ladj.reshape((x.shape[0], -1)).sum(-1)
        return (values, log_jac) if with_jacobian else values

    def to_internal(self, values):
        position = {}
        for name, y in values.items():
            site = self.sites.get(name)  # None: a covariate, passed through
            if site is None or site.transform is None or getattr(site.transform, "is_identity", False):
                position[name] = y
            else:
                position[name] = site.transform.inv(y)
        return position

    def init_position(self, rng_key, num_chains, how, data_values=None):
        """Initial chains: ``"base"``, ``"data"`` (random examples) or ``"uniform"``."""
        ops, xp = self.ops, self.ops.xp
        key_base, key_data, key_unif = ops.split(rng_key, 3)
        if how == "uniform":  # every site is drawn below: only shapes and dtypes are needed
            like = ops.asarray(0.0, None)
            values = {n: ops.zeros((num_chains,) + tuple(s.shape), s.dtype if s.is_discrete else like.dtype, like)
                      for n, s in self.sites.items()}
            values = self.from_internal(values)
        else:
            values = self.info.sample_base(key_base, num_chains)
        if how == "data":
            num_data = next(iter(data_values.values())).shape[0]
            u = ops.uniform(key_data, (num_chains,), ops.asarray(0.0, None))
            idx = xp.clip(ops.astype(u * num_data, ops.int_dtype), 0, num_data - 1)
            values.update({k: v[idx] for k, v in data_values.items()})
        position = self.to_internal(values)
        if how == "uniform":
            keys = ops.split(key_unif, len(self.sites))
            for key, (name, site) in zip(keys, self.sites.items()):
                x = position[name]
                u = ops.uniform(key, tuple(x.shape), ops.asarray(0.0, None))
                if is_one_hot(site):  # a uniform state of each group
                    k = int(site.shape[-1])
                    idx = xp.argmax(u.reshape((x.shape[0], -1, k)), axis=-1)
                    position[name] = ops.asarray(np.eye(k), x)[idx].reshape(tuple(x.shape))
                elif site.is_discrete:
                    choices = ops.asarray(site.values, x)
                    idx = xp.clip(ops.astype(u * len(site.values), ops.int_dtype), 0, len(site.values) - 1)
                    position[name] = choices[idx]
                else:
                    position[name] = ops.astype(4 * u - 2, x.dtype)
        return ops.shard_rows(position)  # split over devices where the fit is (a no-op otherwise)


def _is_identity(site):
    return site.transform is None or getattr(site.transform, "is_identity", False)


def run_kernel(ops, kernel, rng_key, position, aux, logdensity_fn, num_steps, logged=False):
    """``num_steps`` transitions of ``kernel``, as a :class:`KernelRun` (position, aux, mean
    acceptance rate, log p̃ of the final position or None).

    ``logged=True``: ``log_density`` is log p̃ of the final position per chain, from the
    kernel's ``step_logged`` for the last transition (None for a kernel without one, or a
    number of steps that is not a Python int); the draws are the same either way."""
    if logged and (kernel.step_logged is None or not isinstance(num_steps, int)):
        return run_kernel(ops, kernel, rng_key, position, aux, logdensity_fn, num_steps)

    def body(i, carry):
        position, aux, key, total = carry
        key, sub = ops.split(key, 2)
        position, aux, rate = kernel.step(sub, position, aux, logdensity_fn)
        return position, aux, key, ops.astype(total + rate, zero.dtype)  # float64 rates (jax x64)

    zero = ops.asarray(0.0, None)
    if isinstance(num_steps, int) and num_steps == 1:  # one transition (e.g. PCD-1): no loop, no running sum
        _, sub = ops.split(rng_key, 2)
        out = (kernel.step_logged if logged else kernel.step)(sub, position, aux, logdensity_fn)
        rate = out[2] if out[2].dtype == zero.dtype else ops.astype(out[2], zero.dtype)
        return KernelRun(out[0], out[1], rate, *out[3:])
    if not logged:
        position, aux, _, total = ops.fori_loop(0, num_steps, body, (position, aux, rng_key, zero))
        return KernelRun(position, aux, total / num_steps)
    # the first num_steps - 1 transitions as above, the last one logged (the same keys)
    position, aux, key, total = ops.fori_loop(0, num_steps - 1, body, (position, aux, rng_key, zero))
    _, sub = ops.split(key, 2)
    position, aux, rate, log_density = kernel.step_logged(sub, position, aux, logdensity_fn)
    return KernelRun(position, aux, ops.astype(total + rate, zero.dtype) / num_steps, log_density)


def _check_finite_params(params):
    """``params`` (name -> array or tree of arrays) must be finite: NaN parameters would
    give NaN draws and estimates."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict name -> array, got {type(params).__name__}")

    def leaves(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from leaves(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                yield from leaves(v)
        else:
            yield x

    for name, value in params.items():
        for leaf in leaves(value):
            a = leaf.detach().cpu().numpy() if hasattr(leaf, "detach") else np.asarray(leaf)
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                raise ValueError(f"params[{name!r}] contains NaN or inf")


def place_problem(problem, devices, num_chains):
    """``problem`` with its chains split over ``devices`` (NumPyro's ``devices=`` of
    ``sample`` and ``log_partition``; None: ``problem`` itself). Raises before anything
    runs when the devices do not exist or do not divide ``num_chains``, and on Pyro."""
    if devices is None:
        return problem
    placement = get_backend(problem.ops.name).make_placement(devices)
    if placement is None:
        return problem
    if num_chains % placement.num_shards:
        raise ValueError(f"num_chains={num_chains} is not a multiple of the {placement.num_shards} devices the "
                         "chains are split over")
    return Problem(problem.ops.with_placement(placement), problem.info, problem.kernel, problem.positive_kernel)


def compile_problem(model, params, data, backend, model_args, model_kwargs, covariates=None, argument="data"):
    """The backend for ``data``, the model compiled at fixed ``params`` (constrained), and
    the data as that backend's arrays: the preamble of ``sample`` and the evaluation API.
    ``covariates`` names the data leaves that are inputs (conditional models); ``argument``
    is the caller's name for ``data`` in error messages."""
    be = get_backend(detect_backend(data, backend, argument))
    _check_finite_params(params)
    data = be.as_data(data)
    kwargs = {"covariates": covariates} if covariates else {}
    info = be.compile_model(model, data, model_args, model_kwargs or {}, params=params, **kwargs)
    return Problem(be.ops, info), data
