"""JAX implementations of the ops the algorithms need (keys, gradients, loops).

The chunk runner jits one loop over a chunk of parameter updates (of a fixed length, the
active ones run): a chunk is one compiled call, compiled once per fit configuration.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from . import host_keys
from .parallel import spmd_philox

__all__ = ["ops"]


def _philox_available():
    try:
        jax.eval_shape(lambda: jax.random.key(0, impl="philox4x32"))  # traced, not compiled
        return True
    except Exception:  # an older JAX without Philox: threefry throughout
        return False


_PHILOX = _philox_available()


def _bulk(key, placement=None):
    """The key for bulk random numbers (uniforms, normals): Philox-4x32-10 keyed by the
    threefry key's 64 bits where JAX has it. Keys are split with JAX's default threefry;
    on CPU, XLA runs threefry's rounds as a loop, and Philox draws the same uniforms about
    3x faster (Salmon et al. 2011, Parallel random numbers: as easy as 1, 2, 3). A fit
    sharded over devices (``placement``) draws the same numbers from
    ``parallel.spmd_philox``, the Philox that the SPMD partitioner can split."""
    if _PHILOX and not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if placement is not None:
            return jax.random.wrap_key_data(key, impl=spmd_philox)
        return jax.random.wrap_key_data(key, impl="philox4x32")
    return key


_ONCE_MIN_SIZE = 1024  # smaller draws: the generator is cheaper than a conditional


def _once(draw, key, *args):
    """``draw(key, *args)``, computed once into a buffer of its own.

    XLA fuses a random-number generator (counters and Philox rounds, all cheap integer
    operations by its cost model) into every consumer of the draws, so it runs once per
    consumer: in an RBM update the block-Gibbs draws have four (the concatenation with
    the batch, two dtype conversions, the select of the update), which made the update
    1.3x the hand-written one. XLA does not fuse across a conditional, and does not
    remove one whose predicate it cannot evaluate: the draws are made in the branch of a
    ``lax.cond`` whose predicate (a key word differs from itself with its low bit
    flipped) always holds. The values are those of ``draw(key, *args)``; only where the
    computation runs changes (``optimization_barrier`` would say this, but XLA's CPU
    compiler removes barriers before fusion)."""
    out = jax.eval_shape(draw, key, *args)
    if out.size < _ONCE_MIN_SIZE:
        return draw(key, *args)
    word = (jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key).ravel()[0]
    return jax.lax.cond(word != word ^ 1, draw, lambda *_: jnp.zeros(out.shape, out.dtype), key, *args)


def all_finite(tree):
    """Whether every number in ``tree`` is finite, as a 0-d boolean array.

    Real floating-point leaves are checked as ``isfinite(Σ 0·x)``: 0·x is 0 for a finite
    x and NaN for ±inf and NaN (IEEE 754), and a sum of zeros cannot overflow, so this is
    exact. XLA's CPU compiler makes ``all(isfinite(x))`` a boolean array reduced by a
    window reduction: on the 784x500 RBM of ``benchmarks/rbm_pcd.py`` the update's two
    checks (gradients, new parameters) took about 10% of it, one fused sum less than
    half of that."""
    total, ok = jnp.zeros((), jnp.float32), jnp.ones((), bool)
    for x in jax.tree_util.tree_leaves(tree):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.floating):
            total = total + jnp.sum(x * jnp.zeros((), x.dtype)).astype(jnp.float32)
        elif jnp.issubdtype(x.dtype, jnp.complexfloating):
            ok = ok & jnp.all(jnp.isfinite(x))
    return ok & jnp.isfinite(total)


class JaxOps:
    name = "numpyro"
    xp = jnp
    int_dtype = jnp.int32
    caches_compiled = True  # fit_unnormalized keeps compiled updates across calls
    traced = True  # one jitted program: unread values are not computed
    placement = None  # a parallel.ShardedPlacement where chains are sharded over devices

    def with_placement(self, placement):
        """These ops for arrays placed by ``placement`` (``None``: one device)."""
        if placement is None:
            return self
        new = JaxOps()
        new.placement = placement
        return new

    def shard_rows(self, tree):
        """Chains or a minibatch: split along axis 0 over the devices (no-op on one device)."""
        return tree if self.placement is None else self.placement.shard_rows(tree)

    # ---- random keys -------------------------------------------------------------
    def seed(self, rng_seed, like):
        return jax.random.PRNGKey(int(rng_seed))

    def split(self, key, num=2):
        if num == 1:
            return (key,)
        host = host_keys.host_key(key)
        if host is not None:  # a concrete key at set-up: no compilation (host_keys)
            return tuple(jnp.asarray(k) for k in host_keys.split(host, num))
        return _split(num)(key)

    def fork(self, key):
        host = host_keys.host_key(key)
        if host is not None:
            return jnp.asarray(host_keys.fold_in(host, 1))
        return _fork(key)

    def select_key(self, pred, new, old):
        return jnp.where(pred, new, old)

    def key_state(self, key):
        return key

    def key_from_state(self, state, like):
        return state

    def uniform(self, key, shape, like):
        dtype = like.dtype if jnp.issubdtype(like.dtype, jnp.floating) else jnp.float32
        return _once(lambda k: jax.random.uniform(_bulk(k, self.placement), shape, dtype=dtype), key)

    def bernoulli_logits(self, key, logits):
        """Booleans, True with probability sigmoid(logits) (one uniform per entry)."""

        def draw(k, logits):
            u = jax.random.uniform(_bulk(k, self.placement), logits.shape, logits.dtype)
            return u * (1 + jnp.exp(-logits)) < 1

        return _once(draw, key, logits)

    def zeros(self, shape, dtype, like=None):
        return jnp.zeros(shape, dtype)

    def normal(self, key, shape, like):
        dtype = like.dtype if jnp.issubdtype(like.dtype, jnp.floating) else jnp.float32
        return _once(lambda k: jax.random.normal(_bulk(k, self.placement), shape, dtype=dtype), key)

    def map_host(self, fn, tree):
        """``fn`` applied on the host (numpy) to every leaf, results back as jax arrays."""
        return jax.tree_util.tree_map(lambda x: _on_host(fn(np.asarray(x)), jnp.result_type(x)), tree)

    def first_leaf(self, tree):
        return jax.tree_util.tree_leaves(tree)[0]

    def epoch_permutations(self, key, n, num_epochs):
        """``(new key, numpy (num_epochs, n))``: random permutations of ``range(n)``, drawn
        on the host by numpy seeded with the key's bits (XLA's sort-based shuffle, and
        eager dispatch, take milliseconds per epoch on CPU)."""
        bits = np.asarray(key)
        perms = []
        for _ in range(num_epochs):  # one link of the key chain per epoch, as resuming needs
            rng = np.random.default_rng(bits.astype(np.uint64))
            perms.append(rng.permutation(n).astype(np.int32))
            bits = rng.integers(0, 2**32, size=bits.shape, dtype=np.uint64).astype(bits.dtype)
        return jnp.asarray(bits), _stack(perms)

    # ---- arrays --------------------------------------------------------------------
    def asarray(self, value, like, int_=False, bool_=False):
        if bool_:
            return jnp.asarray(np.asarray(value), dtype=bool)
        if int_:
            return jnp.asarray(np.asarray(value), dtype=jnp.int32)
        if like is None:
            return jnp.asarray(value, dtype=jnp.float32)
        return jnp.asarray(value, dtype=like.dtype)

    def from_numpy(self, x, dtype, like=None):
        """A jax array of ``dtype`` with the values of the numpy array ``x``."""
        return _on_host(np.asarray(x), dtype)

    def is_floating(self, x):
        return jnp.issubdtype(x.dtype, jnp.floating)

    def astype(self, x, dtype):
        return x.astype(dtype)

    def pick(self, x, idx):
        """``x[n, idx[n]]`` for each row n."""
        return jnp.take_along_axis(x, idx[:, None], axis=1)[:, 0]

    def set_column(self, x, i, v):
        return x.at[:, i].set(v.astype(x.dtype))

    def set_rows(self, x, idx, v):
        """A copy of ``x`` with rows ``idx`` (distinct integers) set to ``v``."""
        return x.at[idx].set(v.astype(x.dtype))

    def logsumexp(self, x, axis=-1):
        """log Σ exp(x) along ``axis`` (stable; -inf entries allowed)."""
        return jax.nn.logsumexp(x, axis=axis)

    def to_numpy(self, x):
        return np.asarray(x)

    def nanmean_scalars(self, values):
        v = jnp.stack([jnp.asarray(x, jnp.float32) for x in values])
        return jnp.where(jnp.all(jnp.isnan(v)), jnp.nan, jnp.nanmean(v))

    def all_finite(self, tree):
        return all_finite(tree)

    # ---- functional transformations ------------------------------------------------
    def value_and_grad(self, fn, has_aux=False, differentiable=False):
        """``jax.value_and_grad``: its results are always differentiable again (``differentiable``
        changes nothing)."""
        return jax.value_and_grad(fn, has_aux=has_aux)

    def stop_gradient(self, tree):
        return jax.lax.stop_gradient(tree)

    def copy_tree(self, tree):
        return tree  # jax arrays are immutable

    def jit(self, fn):
        """``jax.jit(fn)``: compiled once per input shape."""
        return jax.jit(fn)

    def quick_jit(self, fn):
        """:func:`quick_jit`: compiled fast (XLA's backend optimisations off), for code run
        once or a few times at set-up."""
        return quick_jit(fn)

    def no_grad(self):
        return contextlib.nullcontext()

    def chain_diagnostics(self, trace):
        """Split R-hat and ESS of ``trace`` (chains, draws) by ``numpyro.diagnostics``."""
        from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

        t = np.asarray(trace, np.float64)
        return float(split_gelman_rubin(t)), float(effective_sample_size(t))

    def sample_distribution(self, dist, key, num):
        """``num`` draws of ``dist``: ``dist.sample(key, (num,))``."""
        return dist.sample(key, (num,))

    def compile_now(self):
        """A no-op: ``jax.jit`` compiles at the first call of a shape anyway."""
        return contextlib.nullcontext()

    def fori_loop(self, lower, upper, body, init):
        """``jax.lax.fori_loop`` whose carry keeps the dtypes of ``init`` (see :func:`_keep_dtypes`)."""
        if isinstance(lower, int) and isinstance(upper, int) and upper - lower == 1:
            return _keep_dtypes(body(lower, init), init)  # one iteration: no XLA while loop (and its copies)
        return jax.lax.fori_loop(lower, upper, lambda i, c: _keep_dtypes(body(i, c), c), init)

    def cond(self, pred, true_fn, false_fn, operand):
        """Both branches computed, the result selected leaf by leaf: for the cheap, pure
        branches of the fit's update this is faster on CPU than ``lax.cond``, whose
        operands XLA copies in and out."""
        on_true, on_false = true_fn(operand), false_fn(operand)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)

    def make_chunk_runner(self, step):
        """One jitted call for a chunk of updates: a ``lax.fori_loop`` of ``step`` over the
        active updates (``active`` is a prefix mask), their statistics written into
        buffers of the chunk's fixed length (NaN past the active ones). The chunk's length
        is fixed, so the runner compiles once, and each update runs the same compiled
        code whatever the number of active updates: results do not depend on how a fit is
        cut into calls (the random keys live in the carry)."""

        @jax.jit
        def run(carry, data_values, xs):
            idx, active = xs
            # the update traced once (its statistics' shapes size the buffers) and its jaxpr
            # evaluated in the loop: tracing the model's Python is most of a first fit's set-up
            closed, (_, stats) = jax.make_jaxpr(lambda c, x: step(data_values, c, x), return_shape=True)(
                carry, (idx[0], active[0]))
            out_tree = jax.tree_util.tree_structure((carry, stats))
            stats = jax.tree_util.tree_map(lambda s: jnp.full((idx.shape[0],) + s.shape, jnp.nan, s.dtype), stats)

            def body(i, state):
                c, buf = state
                args = jax.tree_util.tree_leaves((c, (idx[i], active[i])))
                c2, st = jax.tree_util.tree_unflatten(out_tree, jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *args))
                c = _keep_dtypes(c2, c)
                return c, jax.tree_util.tree_map(lambda b, s: b.at[i].set(s), buf, st)

            return jax.lax.fori_loop(0, jnp.sum(active), body, (carry, stats))

        return run

    def eval_shape(self, fn, *args):
        """The shapes and dtypes of ``fn(*args)`` (``jax.eval_shape``: nothing is computed; a
        :func:`quick_jit` function through its ``jax.jit``, whose trace its call reuses)."""
        return jax.eval_shape(fn.jitted if isinstance(fn, _QuickJit) else fn, *args)

    def make_sample_runner(self, kernel, logdensity, run_kernel):
        @jax.jit
        def _run(key, position, aux, num_steps_arr):
            def body(i, carry):
                position, aux, key = carry
                key, sub = jax.random.split(key)
                position, aux, _ = kernel.step(sub, position, aux, logdensity)
                return position, aux, key

            position, aux, _ = jax.lax.fori_loop(0, num_steps_arr, body, (position, aux, key))
            return position, aux

        def run(key, position, aux, num_steps):
            return _run(key, position, aux, jnp.asarray(num_steps, jnp.int32))

        return run


ops = JaxOps()


def _keep_dtypes(new, old):
    """``new`` with each array leaf in the dtype of the matching leaf of ``old``: under JAX's
    x64 mode, float64 parameters (Python-float initial values) meeting float32 chains give
    float64 step results, and a loop's carry must keep its dtypes (the chains stay in the
    dtype they were made in)."""
    def keep(a, b):
        dtype = getattr(b, "dtype", None)
        return a if dtype is None or getattr(a, "dtype", dtype) == dtype else a.astype(dtype)

    return jax.tree_util.tree_map(keep, new, old)


def _stack(perms):
    """``np.stack(perms)`` without a second copy of the usual single permutation (O(N) ints)."""
    return perms[0][None] if len(perms) == 1 else np.stack(perms)


def _on_host(x, dtype):
    """``jnp.asarray(x, dtype)`` with the conversion made by numpy (no compiled conversion)."""
    if dtype is None:
        return jnp.asarray(x)
    try:
        dtype = jax.dtypes.canonicalize_dtype(dtype)
        x = np.asarray(x).astype(dtype, copy=False)
    except TypeError:  # pragma: no cover  (a dtype numpy does not know)
        pass
    return jnp.asarray(x, dtype=dtype)


# tried in turn (an older XLA may not know an option); the first that compiles is kept.
# The fusion emitters off: XLA's older elemental emitters compile the many small kernels of
# set-up code (threefry's rounds, one per draw) in less than half the time.
_QUICK_OPTIONS = [{"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False},
                  {"xla_backend_optimization_level": 0}, {}]


def quick_jit(fn):
    """``jax.jit(fn)`` compiled with XLA's backend optimisations and fusion emitters off on
    CPU, for code run once or a few times at a fit's set-up (structure probes, initial
    chains): such code compiles in about a fifth of the time and runs as fast as it needs
    to (no fast-math either way). Compiled once per input structure, types and placement;
    inputs on other devices take plain ``jax.jit``; traced inputs (inside another jit) run
    ``fn`` itself, in the enclosing program."""
    return _QuickJit(fn)


class _QuickJit:
    """:func:`quick_jit`'s function. ``jitted`` is its ``jax.jit(fn)``: its trace is the one
    this function compiles, so ``ops.eval_shape`` of it (a resume's check of the chains'
    layout) and its first call trace ``fn`` once between them."""

    def __init__(self, fn):
        self.fn, self.jitted, self.compiled = fn, jax.jit(fn), {}

    def __call__(self, *args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return self.fn(*args)  # inside a traced function: part of its program, as written
        arrays = [x for x in leaves if isinstance(x, jax.Array)]
        if not all(_quick_leaf(x) for x in leaves) or (not arrays and jax.default_backend() != "cpu"):
            return self.jitted(*args)
        key = (tree, tuple(jax.typeof(x) for x in leaves), tuple(x.sharding for x in arrays))
        if key not in self.compiled:
            self.compiled[key] = _compile_quickly(self.jitted.lower(*args))
        return self.compiled[key](*args)


def _compile_quickly(lowered):
    """``lowered`` compiled with the first of :data:`_QUICK_OPTIONS` that this XLA takes."""
    while len(_QUICK_OPTIONS) > 1:
        try:
            return lowered.compile(_QUICK_OPTIONS[0])
        except Exception as e:  # pragma: no cover  (an XLA without the option)
            if "compile option" not in str(e):
                raise
            _QUICK_OPTIONS.pop(0)
    return lowered.compile(_QUICK_OPTIONS[0])


def _quick_leaf(x):
    """A leaf :func:`quick_jit` compiles for: a concrete array on the CPU, or host data."""
    if isinstance(x, jax.core.Tracer):
        return False
    if isinstance(x, jax.Array):
        return x.is_fully_addressable and all(d.platform == "cpu" for d in x.devices())
    return isinstance(x, (np.ndarray, np.generic, bool, int, float))


_fork = quick_jit(lambda key: jax.random.fold_in(key, 1))
_SPLITS = {}


def _split(num):
    """``key -> tuple(jax.random.split(key, num))`` (a :func:`quick_jit` outside a jit)."""
    if num not in _SPLITS:
        _SPLITS[num] = quick_jit(lambda key: tuple(jax.random.split(key, num)))
    return _SPLITS[num]
