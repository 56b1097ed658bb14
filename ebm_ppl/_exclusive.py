"""One ebm_ppl call at a time per process.

Pyro keeps its parameters in one process-wide param store and both frameworks keep their
effect-handler stacks in module globals, so two fits (or a fit and ``sample``) running in
two threads would see each other's parameters and plates. Rather than fail in obscure
ways, a call made while another thread is inside an ebm_ppl call raises ``RuntimeError``
at once; nested calls in the same thread are fine (the lock is reentrant).
"""

import functools
import threading

__all__ = ["exclusive"]

_LOCK = threading.RLock()


def exclusive(fn):
    """Run ``fn`` holding the process-wide ebm_ppl lock; raise if another thread holds it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _LOCK.acquire(blocking=False):
            raise RuntimeError(
                f"ebm_ppl.{fn.__name__}: another ebm_ppl call is running in another thread. ebm_ppl is not "
                "thread-safe (Pyro's param store and the frameworks' effect handlers are process-wide): "
                "run fits one after another, or in separate processes"
            )
        try:
            return fn(*args, **kwargs)
        finally:
            _LOCK.release()

    return wrapper
