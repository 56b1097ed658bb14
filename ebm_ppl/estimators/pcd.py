"""Persistent contrastive divergence / stochastic maximum likelihood (PCD, SML).

The negative chains persist across parameter updates: each update continues them for
``num_steps`` transitions under the new parameters. With small learning rates the chains
track the model distribution and the gradient estimate is asymptotically unbiased.

References
----------
Younes (1998), Stochastic gradient estimation strategies for Markov random fields.
Tieleman (2008), Training restricted Boltzmann machines using approximations to the
likelihood gradient.
"""

from .._problem import run_kernel
from .base import Contrastive, Phases
from ._common import check_bool, check_int, check_positive_args, init_positive, positive_repr, run_positive
from .cd import CDState

__all__ = ["PCD", "PCDState"]

PCDState = CDState

_INITS = ("base", "data", "uniform")


class PCD(Contrastive):
    """Persistent chains (SML): ``num_chains`` chains advanced ``num_steps`` per update.

    With latent sites, the positive phase draws them given each batch as :class:`CD`
    does (``positive="base"``: fresh from their base distributions at every update;
    ``positive="persistent"``: continuing one chain per training example;
    ``positive_steps`` transitions of the sampler restricted to the latent sites).

    Parameters
    ----------
    num_chains : int
        Number of persistent negative-phase chains.
    num_steps : int
        Sampler transitions per parameter update.
    init : {"base", "data", "uniform"}
        Where chains start: draws from the sites' base distributions (improper bases:
        uniform in (-2, 2) in unconstrained space), random data examples, or uniform over
        a discrete support.
    positive : {"base", "persistent"}
        Latent sites of the positive phase (see :class:`CD`).
    positive_steps : int, optional
        Transitions of the positive phase (default ``num_steps``).
    rao_blackwell : bool
        Use the conditional means of a layer of binary latent units instead of their draws
        in both phases' gradients (see :class:`~ebm_ppl.CD`).

    Notes
    -----
    Conditional models (``covariates=`` in :func:`~ebm_ppl.fit_unnormalized`): each
    example i has its own model p(y | x_i), so a chain is tied to an input. PCD then keeps
    **one persistent chain per training example** (``num_chains`` is not used), started as
    ``init`` says and continued for ``num_steps`` transitions under p(y | x_i) each time
    example i is in the batch; the negative phase of a batch is its examples' chains. This
    is SML for each conditional in turn: a chain is only advanced every
    ``num_data / batch_size`` updates, so between its visits the parameters move by that
    many steps, and the chain lags the model by that much more than ordinary PCD's (a bias
    that vanishes as the learning rate goes to 0, as PCD's own).

    Examples
    --------
    >>> ebm_ppl.PCD(num_chains=500, num_steps=2)
    PCD(num_chains=500, num_steps=2, init='base')
    """

    supports_covariates = True
    shard_settings = ("num_chains",)

    def __init__(self, num_chains=100, num_steps=1, init="base", positive="base", positive_steps=None, rao_blackwell=False):
        check_int("PCD", "num_chains", num_chains)
        check_int("PCD", "num_steps", num_steps)
        if init not in _INITS:
            raise ValueError(f"PCD: init must be one of {_INITS}, got {init!r}")
        positive, positive_steps = check_positive_args("PCD", positive, positive_steps)
        self.num_chains = int(num_chains)
        self.num_steps = int(num_steps)
        self.init_method = init
        self.positive = positive
        self.positive_steps = positive_steps
        self.rao_blackwell = check_bool("PCD", "rao_blackwell", rao_blackwell)

    def __repr__(self):
        return (f"PCD(num_chains={self.num_chains}, num_steps={self.num_steps}, init={self.init_method!r}"
                f"{positive_repr(self)})")

    def init(self, problem, rng_key, data_values, batch_size):
        key_neg, key_pos = problem.ops.split(rng_key, 2)
        if problem.covariates:  # one chain per training example, tied to its inputs
            return self._init_conditional(problem, key_neg, key_pos, data_values, batch_size)
        position = problem.init_position(key_neg, self.num_chains, self.init_method, data_values)
        return PCDState(position, problem.kernel.init(position),
                        init_positive(self, problem, key_pos, data_values, batch_size))

    def _init_conditional(self, problem, key_neg, key_pos, data_values, batch_size):
        num_data = next(iter(data_values.values())).shape[0]
        if self.init_method == "data":  # chain i starts at example i's own values
            rows = problem.init_position(key_neg, num_data, "base")
            rows.update(problem.to_internal({k: v for k, v in data_values.items() if k in problem.sites}))
        else:
            rows = problem.init_position(key_neg, num_data, self.init_method, data_values)
        rows = {n: v for n, v in rows.items() if n in problem.sites}
        first = {n: v[:batch_size] for n, v in rows.items()}
        first.update({c: data_values[c][:batch_size] for c in problem.covariates})
        return PCDState(rows, problem.kernel.init(first),
                        init_positive(self, problem, key_pos, data_values, batch_size))

    def update(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """Continue the persistent chains: (state, positive position, negative position, acceptance)."""
        key_pos, key_neg = problem.ops.split(rng_key, 2)
        positive, pos_aux = run_positive(self, problem, key_pos, state.positive_aux, params, batch_values,
                                         batch_index)
        if problem.covariates:  # the batch's examples' chains, under p(y | x_i)
            if batch_index is None:
                raise ValueError("PCD with covariates needs the batch's example indices")
            start = {n: v[batch_index] for n, v in state.position.items()}
            start.update({c: batch_values[c] for c in problem.covariates})
            position, aux, rate, _ = run_kernel(problem.ops, problem.kernel, key_neg, start, state.aux,
                                                problem.logdensity_fn(params), self.num_steps)
            rows = {n: problem.ops.set_rows(v, batch_index, position[n]) for n, v in state.position.items()}
            return Phases(PCDState(rows, aux, pos_aux), positive, position, rate)
        # traced (NumPyro): log p̃ of the new chains from the sampler where it has it, so that
        # the objective does not compute it again (base.contrastive_objective)
        run = run_kernel(problem.ops, problem.kernel, key_neg, state.position, state.aux,
                         problem.logdensity_fn(params), self.num_steps, logged=problem.ops.traced)
        return Phases(PCDState(run.position, run.aux, pos_aux), positive, run.position, run.acceptance_rate,
                      negative_log_density=run.log_density)
