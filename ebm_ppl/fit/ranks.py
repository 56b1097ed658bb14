"""A fit split over the ranks of ``torch.distributed``: its checkpoints and its
per-example chains.

Checkpoints. Each rank holds its own share of the chains, its own sampler state and its
own sampling stream; the parameters, optimizer state and minibatch stream are the same
on every rank. At a checkpoint every rank sends its estimator state and sampling stream
to rank 0, which writes one file (atomically, as :func:`ebm_ppl.save`): ``state.rng_key``
and ``state.estimator_state`` are then tuples with one entry per rank, in rank order, and
``chains`` holds every rank's chains, concatenated in rank order (the chains of the whole
fit). ``resume=ebm_ppl.load(path)`` on every rank of a run with as many ranks takes that
rank's entries, so the resumed fit continues each rank's chains and streams bit for bit.

Per-example chains (``positive="persistent"``). The table of latent chains, one row per
training example, is kept whole on every rank and is the same on every rank: it starts as
rank 0's, and after each update every rank's new rows (its columns of the minibatch) are
written into every rank's table (:meth:`share_rows`), so an example's chain continues on
whichever rank its example falls next.
"""

from .._result import FitResult
from ..estimators._common import PersistentLatents

__all__ = ["on_ranks", "checkpoint_result", "rank_share", "is_ranks_state", "share_examples", "same_examples",
           "stop_note"]


def on_ranks(placement):
    """Whether the fit is split over the ranks of ``torch.distributed``."""
    return placement is not None and placement.kind == "ranks"


def checkpoint_result(placement, result):
    """The result a checkpoint holds: ``result`` itself in one process; under
    torch.distributed every rank's estimator state and sampling stream gathered to rank 0
    (every rank calls this; ranks other than 0 get None)."""
    if not on_ranks(placement):
        return result
    st = result.state
    states = placement.gather((st.estimator_state, st.rng_key))
    chains = placement.gather_rows(result.chains)
    if placement.rank != 0:
        return None
    state = st._replace(estimator_state=tuple(s for s, _ in states), rng_key=tuple(k for _, k in states))
    return result._replace(state=state, chains=chains)


def is_ranks_state(state):
    """Whether ``state`` is a checkpoint's state of a fit over several ranks (one sampling
    stream per rank); a one-process state has one stream (a tensor / array, or Pyro's
    ``(device, state)`` pair)."""
    keys = state.rng_key
    return (isinstance(keys, tuple) and len(keys) > 0 and all(isinstance(k, tuple) for k in keys)
            and isinstance(state.estimator_state, tuple) and len(state.estimator_state) == len(keys))


def rank_share(placement, resume):
    """``resume`` as this rank resumes it: a checkpoint of a fit over ranks gives this rank
    its own estimator state and sampling stream; refused with a ValueError where the
    number of ranks differs (one process included)."""
    if resume is None or not isinstance(resume, FitResult) or not is_ranks_state(resume.state):
        return resume
    st = resume.state
    world = len(st.rng_key)
    if not on_ranks(placement) or placement.num_shards != world:
        here = f"{placement.num_shards} ranks" if on_ranks(placement) else "one process"
        raise ValueError(f"resume: the result holds the chains and sampling streams of {world} ranks of "
                         f"torch.distributed (a checkpoint of a fit split over {world} ranks), and this fit runs on "
                         f"{here}: resume it under torch.distributed with {world} ranks")
    r = placement.rank
    return resume._replace(state=st._replace(estimator_state=st.estimator_state[r], rng_key=st.rng_key[r]))


def _map_persistent(state, fn):
    """``state`` with ``fn(latents)`` in place of every :class:`PersistentLatents`' table."""
    if isinstance(state, PersistentLatents):
        return state._replace(latents=fn(state.latents))
    if isinstance(state, tuple) and hasattr(type(state), "_fields"):
        return type(state)(*(_map_persistent(x, fn) for x in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_persistent(x, fn) for x in state)
    if isinstance(state, dict):
        return {k: _map_persistent(v, fn) for k, v in state.items()}
    return state


def share_examples(placement, state, idx):
    """After an update on ``idx`` (this rank's rows of the minibatch): the per-example
    chains with every rank's new rows (under torch.distributed; else ``state``)."""
    if not on_ranks(placement):
        return state
    return _map_persistent(state, lambda latents: placement.share_rows(latents, idx))


def same_examples(placement, state):
    """A fresh state's per-example chains made rank 0's on every rank."""
    if not on_ranks(placement):
        return state
    return _map_persistent(state, placement.broadcast)


def stop_note(err, num_updates_every):
    """The note an interrupted fit over ranks gets instead of a final checkpoint."""
    err.add_note(f"under torch.distributed no checkpoint is written on a stop (the ranks may stop after different "
                 f"updates): the last one, written every {num_updates_every} updates, stands")

