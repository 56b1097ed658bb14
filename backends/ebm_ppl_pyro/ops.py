"""PyTorch implementations of the ops the algorithms need (keys, gradients, loops).

Random keys are ``torch.Generator`` objects on the data's device: ``split`` hands back the
same generator (PyTorch's streams are stateful), and ``key_state`` / ``key_from_state``
snapshot and restore them so a fit can be resumed exactly.
"""

import copy

import numpy as np
import torch

from .capture_policy import capture_at_first_call

__all__ = ["ops"]


class TorchOps:
    name = "pyro"
    xp = torch
    int_dtype = torch.long
    caches_compiled = False  # eager: nothing compiled to keep
    traced = False  # eager: every line runs; optimizers step in place
    placement = None  # PyTorch splits chains over ranks (parallel.py), not devices

    def with_placement(self, placement):
        return self

    def shard_rows(self, tree):
        """A no-op: each rank already holds only its own chains and examples."""
        return tree

    # ---- random keys -------------------------------------------------------------
    def seed(self, rng_seed, like):
        g = torch.Generator(device=like.device)
        g.manual_seed(int(rng_seed))
        return g

    def split(self, key, num=2):
        return (key,) * num

    def fork(self, key):
        g = torch.Generator(device=key.device)
        g.manual_seed(int(torch.randint(0, 2**62, (), generator=key, device=key.device)))
        return g

    def select_key(self, pred, new, old):
        return new  # one stateful generator: inactive updates never run on Pyro

    def key_state(self, key):
        return (str(key.device), key.get_state().clone())

    def key_from_state(self, state, like):
        device, s = state
        g = torch.Generator(device=device)
        g.set_state(s.clone())
        return g

    def uniform(self, key, shape, like):
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return torch.rand(shape, generator=key, dtype=dtype, device=key.device)

    def bernoulli_logits(self, key, logits):
        """Booleans, True with probability sigmoid(logits) (one uniform per entry)."""
        u = torch.rand(logits.shape, generator=key, dtype=logits.dtype, device=key.device)
        return u < torch.sigmoid(logits)

    def zeros(self, shape, dtype, like=None):
        return torch.zeros(shape, dtype=dtype, device=getattr(like, "device", None))

    def normal(self, key, shape, like):
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return torch.randn(shape, generator=key, dtype=dtype, device=key.device)

    def map_host(self, fn, tree):
        """``fn`` applied on the host (numpy) to every leaf, results back as tensors."""
        return tree_map(lambda a: torch.as_tensor(fn(a.detach().cpu().numpy()), dtype=a.dtype, device=a.device), tree)

    def first_leaf(self, tree):
        return next(_leaves(tree))

    def epoch_permutations(self, key, n, num_epochs):
        """``(key, numpy (num_epochs, n))``: random permutations of ``range(n)``."""
        perms = [torch.randperm(n, generator=key, device=key.device).cpu().numpy() for _ in range(num_epochs)]
        return key, _stack(perms)

    # ---- arrays --------------------------------------------------------------------
    def asarray(self, value, like, int_=False, bool_=False):
        if bool_:
            return torch.as_tensor(np.asarray(value), dtype=torch.bool, device=getattr(like, "device", None))
        if int_:
            return torch.as_tensor(np.asarray(value), dtype=torch.long, device=getattr(like, "device", None))
        if like is None:
            return torch.as_tensor(value, dtype=torch.get_default_dtype())
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)

    def from_numpy(self, x, dtype, like=None):
        """A tensor of ``dtype`` with the values of the numpy array ``x`` (on ``like``'s device)."""
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=getattr(like, "device", None))

    def is_floating(self, x):
        return x.is_floating_point()

    def astype(self, x, dtype):
        return x.to(dtype)

    def pick(self, x, idx):
        """``x[n, idx[n]]`` for each row n."""
        return x.gather(1, idx[:, None])[:, 0]

    def set_column(self, x, i, v):
        y = x.clone()
        y[:, i] = v
        return y

    def set_rows(self, x, idx, v):
        """A copy of ``x`` with rows ``idx`` (distinct integers) set to ``v``."""
        y = x.clone()
        y[idx] = v.to(x.dtype)
        return y

    def logsumexp(self, x, axis=-1):
        """log Σ exp(x) along ``axis`` (stable; -inf entries allowed)."""
        return torch.logsumexp(x, dim=axis)

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def nanmean_scalars(self, values):
        v = torch.stack([torch.as_tensor(x, dtype=torch.get_default_dtype()) for x in values])
        return torch.nanmean(v) if not torch.isnan(v).all() else v[0]

    def all_finite(self, tree):
        """One boolean tensor: every entry of every leaf finite (integer leaves always are).

        First from the leaves' sums (a NaN or infinite entry makes its sum non-finite; one
        fast reduction per leaf), and only where a sum is not finite (a non-finite entry, or
        finite entries whose sum overflows) entry by entry."""
        leaves = [x for x in _leaves(tree) if (x.is_floating_point() or x.is_complex()) and x.numel()]
        if not leaves:
            return torch.tensor(True)
        sums = leaves[0].sum() if len(leaves) == 1 else torch.stack([x.sum() for x in leaves])
        ok = torch.isfinite(sums).all()
        if bool(ok):
            return ok
        return torch.stack([torch.isfinite(x).all() for x in leaves]).all()

    # ---- functional transformations ------------------------------------------------
    def value_and_grad(self, fn, has_aux=False, differentiable=False):
        def wrapped(x):
            if differentiable:  # inputs that carry a graph stay in it: this gradient is differentiated again
                leaves = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in x.items()}
            else:
                leaves = {k: v if (v.is_leaf and v.requires_grad) else v.detach().requires_grad_(True)
                          for k, v in x.items()}
            names = list(leaves)
            with torch.enable_grad():
                out = fn(leaves)
                value, aux = out if has_aux else (out, None)
                grads = torch.autograd.grad(value, [leaves[k] for k in names], allow_unused=True,
                                            create_graph=differentiable)
            grads = {k: torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(names, grads)}
            if not differentiable:
                value = value.detach()
                aux = tree_map(lambda a: a.detach(), aux)
            return (value, aux) if has_aux else value, grads

        return wrapped

    def stop_gradient(self, tree):
        return tree_map(lambda a: a.detach() if isinstance(a, torch.Tensor) else a, tree)

    def copy_tree(self, tree):
        return tree_map(lambda a: a.detach().clone() if isinstance(a, torch.Tensor) else copy.deepcopy(a), tree)

    def fori_loop(self, lower, upper, body, init):
        carry = init
        for i in range(lower, upper):
            carry = body(i, carry)
        return carry

    def jit(self, fn):
        """PyTorch runs eagerly: ``fn`` itself."""
        return fn

    def no_grad(self):
        return torch.no_grad()

    def chain_diagnostics(self, trace):
        """Split R-hat and ESS of ``trace`` (chains, draws) by ``pyro.ops.stats``."""
        from pyro.ops.stats import effective_sample_size, split_gelman_rubin

        t = torch.as_tensor(trace).double()
        return float(split_gelman_rubin(t, chain_dim=0, sample_dim=1)), float(
            effective_sample_size(t, chain_dim=0, sample_dim=1))

    def sample_distribution(self, dist, key, num):
        """``num`` draws of ``dist`` under a seed drawn from ``key`` (torch's global stream
        forked, so the caller's is untouched)."""
        seed = int(torch.randint(0, 2**62, (), generator=key, device=key.device))
        with torch.random.fork_rng(devices=[] if key.device.type == "cpu" else [key.device]):
            torch.manual_seed(seed)
            return dist.sample((num,))

    def quick_jit(self, fn):
        """PyTorch runs eagerly: ``fn`` itself."""
        return fn

    def compile_now(self):
        """The model's graphs captured at the first call of a shape (see ``model._Captured``)."""
        return capture_at_first_call()

    def cond(self, pred, true_fn, false_fn, operand):
        return true_fn(operand) if bool(pred) else false_fn(operand)

    def make_chunk_runner(self, step):
        """Run ``step`` over the active updates of a chunk, stopping at the first failure."""

        def run(carry, data_values, xs):
            idx, active = xs
            outs = []
            rows, flags = idx.unbind(0), active.unbind(0)  # one call each, not one per update
            for i, is_active in enumerate(active.tolist()):
                if not is_active:
                    break
                carry, out = step(data_values, carry, (rows[i], flags[i]))
                outs.append(out)
                if int(carry.failed) >= 0:
                    break
            if not outs:
                nan = torch.full((0,), float("nan"))
                return carry, (nan, nan, nan, nan)
            return carry, tuple(_stack_stats([o[j] for o in outs]) for j in range(len(outs[0])))

        return run

    def eval_shape(self, fn, *args):
        """``fn(*args)`` (eager PyTorch has no abstract evaluation; used to compare structures)."""
        return fn(*args)

    def make_sample_runner(self, kernel, logdensity, run_kernel):
        def run(key, position, aux, num_steps):
            run = run_kernel(self, kernel, key, position, aux, logdensity, num_steps)
            return self.stop_gradient(run.position), run.aux

        return run


def _stack_stats(values):
    """One float32 tensor of the updates' statistics (tensors or numbers)."""
    if all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 and not v.requires_grad for v in values):
        return torch.stack(values)
    return torch.stack([torch.as_tensor(v).detach().float() for v in values])


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _leaves(v)
    elif isinstance(tree, torch.Tensor):
        yield tree


def tree_map(fn, tree):
    if isinstance(tree, dict):
        return type(tree)((k, tree_map(fn, v)) for k, v in tree.items())
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(tree_map(fn, v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v) for v in tree)
    if tree is None:
        return None
    return fn(tree)


ops = TorchOps()


def _stack(perms):
    """``np.stack(perms)`` without a second copy of the usual single permutation (O(N) ints)."""
    return perms[0][None] if len(perms) == 1 else np.stack(perms)
