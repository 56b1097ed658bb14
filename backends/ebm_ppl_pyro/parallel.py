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

    # ---- what checkpoints and per-example chains need (ranks only; every rank calls them)
    def gather(self, tree):
        """Every rank's ``tree`` (equal structures and shapes), as a list in rank order.

        Tensors travel by ``all_gather`` (on the collective's device, booleans as bytes),
        other leaves (a generator's device string) by ``all_gather_object``."""
        import torch
        import torch.distributed as dist

        leaves, rebuild = _flatten(tree)
        kept = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        others = [x for x in leaves if not isinstance(x, torch.Tensor)]
        per_rank = [list(leaves) for _ in range(self.num_shards)]
        for i in kept:
            for r, x in enumerate(self._all_gather(leaves[i])):
                per_rank[r][i] = x
        if others:
            got = [None] * self.num_shards
            dist.all_gather_object(got, others)
            for r in range(self.num_shards):
                rest = iter(got[r])
                per_rank[r] = [x if i in kept else next(rest) for i, x in enumerate(per_rank[r])]
        return [rebuild(xs) for xs in per_rank]

    def gather_rows(self, tree):
        """``tree`` with every leaf the concatenation of the ranks' leaves along axis 0."""
        import torch

        parts = self.gather(tree)
        leaves = [_flatten(p)[0] for p in parts]
        return _flatten(tree)[1]([torch.cat(xs) for xs in zip(*leaves)])

    def share_rows(self, tables, idx):
        """Per-example tables (dict of tensors, one row per training example) after each
        rank wrote the rows ``idx`` of its share of a minibatch: every rank's new rows in
        every rank's tables (two all-gathers a table: the rows, then their values)."""
        import torch

        rows = torch.cat(self._all_gather(idx)).to(idx.device)
        out = {}
        for name, table in tables.items():
            values = torch.cat(self._all_gather(table[idx].detach())).to(table.device)
            out[name] = table.detach().index_put((rows,), values)
        return out

    def broadcast(self, tree):
        """Rank 0's ``tree`` (tensors) on every rank."""
        import torch.distributed as dist

        leaves, rebuild = _flatten(tree)
        out = []
        for x in leaves:
            y = _to_wire(x)
            dist.broadcast(y, src=0)
            out.append(_from_wire(y, x))
        return rebuild(out)

    def _all_gather(self, x):
        import torch.distributed as dist

        y = _to_wire(x)
        got = [y.new_empty(y.shape) for _ in range(self.num_shards)]
        dist.all_gather(got, y.contiguous())
        return [_from_wire(g, x) for g in got]


def _to_wire(x):
    """``x`` as the process group carries it: on its device (CUDA under NCCL, CPU
    otherwise), booleans as bytes; a copy."""
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else \
        torch.device("cpu")
    y = x.detach().to(device=device, copy=True)
    return y.to(torch.uint8) if y.dtype == torch.bool else y


def _from_wire(y, like):
    return y.to(device=like.device, dtype=like.dtype)


def _flatten(tree):
    """(leaves, rebuild) of nested tuples, NamedTuples, lists and dicts."""
    if isinstance(tree, (dict, list, tuple)):
        items = list(tree.values()) if isinstance(tree, dict) else list(tree)
        parts = [_flatten(x) for x in items]
        leaves = [leaf for part in parts for leaf in part[0]]

        def rebuild(xs):
            out, start = [], 0
            for part_leaves, part_rebuild in parts:
                out.append(part_rebuild(xs[start:start + len(part_leaves)]))
                start += len(part_leaves)
            if isinstance(tree, dict):
                return dict(zip(tree.keys(), out))
            return type(tree)(*out) if hasattr(type(tree), "_fields") else type(tree)(out)

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
