"""More than one process on PyTorch: ``fit_unnormalized`` under ``torch.distributed``.

When ``torch.distributed`` is initialized with more than one rank (``torchrun``; gloo on
CPU, NCCL on GPU), a fit is data- and chain-parallel: rank r holds ``num_chains / world``
chains and columns ``[r·b/world, (r+1)·b/world)`` of every minibatch of ``b`` examples
(every rank draws the same permutations: the minibatch stream is seeded by ``rng_seed``
alone). After each update's gradient, the gradient and the update's statistics are
averaged over the ranks with ``dist.all_reduce`` (SUM, then divided by the world size):
the mean over equal shares of the chains and examples is the mean over all of them, so
every rank applies the same gradient to the same parameters and ends with the same
parameters. ``DistributedDataParallel`` is not used: it reduces the autograd gradients of
a module, and the surrogate's gradient may come from a traced graph (and the parameters
from ``pyro.param``).

The sampling stream of rank 0 is the one-process stream of ``rng_seed``; rank r > 0
seeds its generator with ``numpy.random.SeedSequence((rng_seed, r))``: the streams differ
per rank and are reproducible.
"""


import numpy as np

__all__ = ["make_placement", "TorchDistributedPlacement"]


def _world():
    """(rank, world size) of an initialized process group, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.get_rank(), dist.get_world_size()


class TorchDistributedPlacement:
    """A fit's share on this rank, and the all-reduce that joins the ranks."""

    kind = "ranks"

    def __init__(self, rank, world):
        self.rank, self.num_shards = int(rank), int(world)
        self.key = ("torch.distributed", self.rank, self.num_shards)

    def local_estimator(self, estimator):
        """A copy of ``estimator`` with this rank's share of the chains (and buffer)."""
        return estimator.local_share(self.num_shards)

    def local_indices(self, idx):
        """This rank's columns of the ``(updates, batch_size)`` minibatch indices."""
        share = idx.shape[1] // self.num_shards
        return idx[:, self.rank * share:(self.rank + 1) * share]

    def sampling_seed(self, rng_seed):
        if self.rank == 0:
            return rng_seed
        return int(np.random.SeedSequence((int(rng_seed), self.rank)).generate_state(1, np.uint64)[0] >> 1)

    def mean(self, tree):
        """The mean of ``tree`` (a tuple or dict of tensors) over the ranks: one all-reduce."""
        import torch
        import torch.distributed as dist

        leaves, rebuild = _flatten(tree)
        leaves = [torch.as_tensor(x) for x in leaves]
        device = next((x.device for x in leaves if x.device.type != "cpu"), leaves[0].device)
        flat = torch.cat([x.to(device=device, dtype=torch.float64).reshape(-1) for x in leaves])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat / self.num_shards
        out, start = [], 0
        for x in leaves:
            out.append(flat[start:start + x.numel()].reshape(x.shape).to(device=x.device, dtype=x.dtype))
            start += x.numel()
        return rebuild(out)

    def place(self, params, opt_state, est_state, data_values):
        return params, opt_state, est_state, data_values


def _flatten(tree):
    """(leaves, rebuild) of nested tuples, lists and dicts."""
    if isinstance(tree, (dict, list, tuple)):
        items = list(tree.values()) if isinstance(tree, dict) else list(tree)
        parts = [_flatten(x) for x in items]
        leaves = [leaf for part in parts for leaf in part[0]]

        def rebuild(xs):
            out, start = [], 0
            for part_leaves, part_rebuild in parts:
                out.append(part_rebuild(xs[start:start + len(part_leaves)]))
                start += len(part_leaves)
            return dict(zip(tree.keys(), out)) if isinstance(tree, dict) else type(tree)(out)

        return leaves, rebuild
    return [tree], lambda xs: xs[0]


def make_placement(devices):
    """This rank's placement under ``torch.distributed`` (None in a single process);
    ``devices=`` is NumPyro's (JAX sharding) and raises here."""
    if devices is not None:
        raise NotImplementedError(
            f"devices={devices!r} is not supported on the Pyro backend: devices= shards a NumPyro fit over JAX "
            "devices; a Pyro fit runs data- and chain-parallel over the ranks of torch.distributed (launch it with "
            "torchrun, one process per device)")
    world = _world()
    if world is None or world[1] == 1:
        return None
    return TorchDistributedPlacement(*world)
