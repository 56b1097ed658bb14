"""Docstrings kept beside their functions as module-level strings.

The public functions carry long numpydoc docstrings; written as a module-level string
right above the function and attached with :func:`doc`, they leave the function itself
short while ``help()`` and ``inspect.getdoc`` show them as before.
"""

__all__ = ["doc"]


def doc(text):
    """A decorator that sets the function's ``__doc__`` to ``text``."""

    def attach(fn):
        fn.__doc__ = text
        return fn

    return attach
