"""Binding a trainer to data: the compiled model, kernels, optimizer and update."""

from typing import Any, NamedTuple


from .._problem import PROBE_SEED, Problem
from .._rao_blackwell import rao_blackwell_site
from ..estimators.base import REGISTRY
from ..samplers.auto import build_kernel
from ..samplers.base import restrict_sampler
from .cache import _COMPILED, _COMPILED_SIZE, _compiled_key
from .resume import _check_resume, _signature
from .step import _CHUNK_UPDATES, ChunkRunners, make_update


class _Compiled(NamedTuple):
    """A trainer bound to data of one shape: the compiled model, kernels and update."""

    be: Any
    ops: Any  # the backend's ops, placed over the devices / ranks where the fit is split
    name: str
    info: Any
    problem: Any
    opt: Any
    run_chunk: Any
    init_chains: Any
    update: Any  # one update on an explicit batch (Trainer.update): update(carry, batch, index)
    data_values: dict
    batch_size: int
    like: Any
    signature: dict
    placement: Any  # None on one device / process
    estimator: Any  # this device's or rank's share of the trainer's estimator


def _setup(be, ops, name, model, data, estimator, sampler, optimizer, batch_size, model_args, model_kwargs, resume,
           covariates=None, placement=None, given_estimator=None):
    """Compile (or reuse) the model, kernels, optimizer and chunk runner, and check
    ``resume``; raises before anything the caller can see changes. ``estimator`` is this
    rank's share of ``given_estimator`` (the same object without torch.distributed)."""
    data = be.as_data(data)
    kwargs = {"covariates": covariates} if covariates else {}
    # traced on one batch's rows (the data's values are checked in chunks): set-up memory O(batch)
    info = be.compile_model(model, data, model_args, model_kwargs or {}, trace_rows=batch_size, **kwargs)
    if info.covariates and not getattr(estimator, "supports_covariates", False):
        able = sorted(n for n, c in REGISTRY.items() if c.supports_covariates and n.isidentifier())
        raise NotImplementedError(f"covariates with estimator {type(estimator).__name__}: conditional models "
                                  f"are fitted with {', '.join(able)} only")
    data_values = info.data_to_values(data)
    num_data = int(next(iter(data_values.values())).shape[0])
    batch_size = num_data if batch_size is None else int(batch_size)
    if batch_size > num_data:
        raise ValueError(f"batch_size={batch_size} is larger than the data set ({num_data} examples)")
    like = next(iter(data_values.values()))
    cache_key = _compiled_key(name, model, model_args, model_kwargs, data, estimator, sampler, optimizer,
                              batch_size, _CHUNK_UPDATES, covariates, placement) if ops.caches_compiled else None
    cached = _COMPILED.get(cache_key) if cache_key is not None else None
    if cached is not None:  # the same fit as before: its kernels and compiled update
        _COMPILED.move_to_end(cache_key)
        problem, opt, run_chunk, init_chains, one_update = cached
    else:
        problem = Problem(ops, info)
        probe = problem.probe(ops.seed(PROBE_SEED, like))
        estimator.check(problem, probe)  # a model the estimator cannot fit is refused here
        problem.kernel = build_kernel(sampler, ops, list(info.sites.values()), probe=probe)
        latent = [site for site in info.sites.values() if not site.is_observed]
        if latent and estimator.needs_sampler:
            positive = restrict_sampler(sampler, [s.name for s in latent])
            problem.positive_kernel = build_kernel(positive, ops, latent, probe=probe)
        problem.rao_blackwell = rao_blackwell_site(problem, estimator, probe)
        opt = be.make_optimizer(optimizer)
        opt.check(info.init_params)
        run_chunk = ChunkRunners(problem, estimator, opt, num_data, placement)
        one_update = _one_update(ops, make_update(problem, estimator, opt, num_data, placement))
        # run once per fit: compiled quickly; a resume's eval_shape and the call share one trace
        init_chains = ops.quick_jit(lambda k, d: estimator.init(problem, k, d, batch_size))
        if cache_key is not None:
            _COMPILED[cache_key] = (problem, opt, run_chunk, init_chains, one_update)
            while len(_COMPILED) > _COMPILED_SIZE:
                _COMPILED.popitem(last=False)
    signature = _signature(info, opt)
    if resume is not None:
        _check_resume(resume, ops, info, opt, estimator if given_estimator is None else given_estimator, init_chains, data_values, like,
                      signature)
    return info, problem, opt, run_chunk, init_chains, one_update, data_values, batch_size, like, signature


def _one_update(ops, update):
    """``update`` of one active update, compiled once per batch shape (NumPyro)."""
    return ops.jit(lambda carry, batch, idx: update(carry, batch, idx, ops.asarray(True, None, bool_=True)))
