"""Stopping a fit without losing it: SIGINT and SIGTERM deferred to the next consistent
point, the exception each way of stopping raises (always with ``.result``, the last
consistent state), the final checkpoint of an interrupted fit, and the check that the
checkpoint folder can be written before the first update.

Ways a fit stops early, and what is raised (``err.result`` in every case):

* an update that is not finite: ``FloatingPointError`` (the state before that update);
* SIGINT (Ctrl-C) or a ``KeyboardInterrupt``: ``KeyboardInterrupt``;
* SIGTERM (what ``kill``, schedulers and containers send): ``SystemExit`` with exit status
  143 (128 + SIGTERM, the status a shell reports for a process ended by SIGTERM), so that
  a script which does not catch it exits quietly, after ``finally`` blocks and ``atexit``,
  with that status; a ``SystemExit`` raised in the fit (``sys.exit`` in a handler of the
  user's) is re-raised with its own code;
* an error between chunks (a checkpoint that cannot be written: disk full, file-size
  limit, folder removed; a monitor or callable that fails): that exception itself, with a
  note saying where the fit stands.

An interrupted fit with ``checkpoint_path`` also saves its last consistent state there.
"""

import os
import signal
import tempfile
import threading

from .checkpoint import save

__all__ = ["DeferredStop", "TERMINATED_EXIT_CODE", "check_checkpoint_path", "stop_error", "save_on_stop"]

TERMINATED_EXIT_CODE = 128 + int(signal.SIGTERM)


def _terminate_now(signum, frame):
    """A second SIGTERM: stop at once (a Python exception, so ``finally`` blocks, such as the
    checkpoint writer's removal of its temporary file, still run)."""
    raise SystemExit(TERMINATED_EXIT_CODE)


class DeferredStop:
    """Within the block, SIGINT and SIGTERM set ``pending`` (the signal's number; SIGTERM
    wins over SIGINT) instead of acting, so the fit stops at the next point where its state
    is consistent (between calls of the chunk runner). A second SIGINT raises
    KeyboardInterrupt at once, a second SIGTERM SystemExit. A signal is deferred only in
    the main thread and only where it has its default handler (Python's
    ``default_int_handler`` for SIGINT, ``SIG_DFL`` for SIGTERM); a handler of the user's
    is left alone (a KeyboardInterrupt or SystemExit it raises is caught between chunks)."""

    _DEFAULTS = ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))

    def __init__(self):
        self.pending, self.previous = None, {}

    def _handler(self, signum, frame):
        if self.pending is None or signum == signal.SIGTERM:
            self.pending = signum
        if signum == signal.SIGINT:
            signal.signal(signum, self.previous[signum])  # a second Ctrl-C interrupts at once
        else:
            signal.signal(signum, _terminate_now)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum, default in self._DEFAULTS:
                if signal.getsignal(signum) is default:
                    self.previous[signum] = default
                    signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False


def check_checkpoint_path(checkpoint_path):
    """Refuse, before the first update, a ``checkpoint_path`` that cannot be written: not a
    path, a folder, in a folder that does not exist or where a file cannot be created (a
    probe temporary file is created there and removed, as the writer would)."""
    if not isinstance(checkpoint_path, (str, os.PathLike)):
        raise TypeError(f"checkpoint_path must be a path, got {type(checkpoint_path).__name__}")
    path = os.fspath(checkpoint_path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"checkpoint_path={path!r}: the folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"checkpoint_path={path!r} is a folder: pass the path of a file in it, e.g. "
                         f"{os.path.join(path, 'fit.npz')!r}")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as e:
        raise ValueError(f"checkpoint_path={path!r}: a file cannot be created in the folder {folder!r} "
                         f"({e.strerror or e}): pass a path in a folder you can write") from e
    os.close(fd)
    os.unlink(probe)


def _interrupt_message(result, num_applied, what):
    return (f"fit_unnormalized {what} after {result.state.num_updates} updates ({num_applied} in this call); "
            "err.result holds that state: fit_unnormalized(..., resume=err.result) continues it exactly")


def stop_error(result, num_applied, failed, stop):
    """The exception a fit that stopped early raises, with ``.result`` (None: it did not).

    ``failed``: an update was not finite; ``stop``: None, a deferred signal's number, or
    the exception that stopped the loop (see the module docstring)."""
    if failed:
        err = FloatingPointError(
            f"non-finite log density, gradient or parameter at update {result.state.num_updates} "
            f"(update {num_applied} of this call); parameters, optimizer state and chains are left "
            "at their values before that update (see err.result)")
    elif stop is None:
        return None
    elif isinstance(stop, KeyboardInterrupt) or stop == signal.SIGINT:
        err = KeyboardInterrupt(_interrupt_message(result, num_applied, "interrupted"))
    elif stop == signal.SIGTERM:
        err = SystemExit(_interrupt_message(result, num_applied, "terminated (SIGTERM)"))
        err.code = TERMINATED_EXIT_CODE  # the exit status; the message stays in err.args
    elif isinstance(stop, SystemExit):
        err = stop
    else:  # a failure between chunks: the error itself, and where the fit stands
        err = stop
        err.add_note(f"fit_unnormalized stopped after {result.state.num_updates} updates ({num_applied} in this "
                     "call), every one of them kept: err.result holds that state; fit_unnormalized(..., "
                     "resume=err.result) continues it")
    err.result = result
    return err


def is_interrupt(err):
    """Whether ``err`` (from :func:`stop_error`) stops the fit on request (SIGINT, SIGTERM)."""
    return isinstance(err, (KeyboardInterrupt, SystemExit))


def save_on_stop(err, result, path):
    """Save an interrupted fit's ``result`` to its checkpoint ``path``; the outcome is a
    note on ``err`` (a write that fails does not hide the interrupt)."""
    try:
        save(result, path)
    except BaseException as e:  # a full disk, a second signal: the interrupt is still raised, with its result
        err.add_note(f"the final checkpoint could not be written to {path!r}: {type(e).__name__}: {e}")
        return
    err.add_note(f"its state is also saved to {path!r}: resume=ebm_ppl.load({path!r}) continues it")
