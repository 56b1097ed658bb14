"""When the Pyro backend captures a shape's graphs (see ``model._Captured``): at the third
call of a shape, so that one-off shapes (the structure probes) never are; inside
:class:`capture_at_first_call` (``Trainer.update``, whose batch shapes recur) at the first."""

__all__ = ["capture_after", "capture_at_first_call"]

_CAPTURE_AFTER = [2]  # eager calls of a shape before it is captured


def capture_after():
    """Eager calls of a new shape before its graph is captured."""
    return _CAPTURE_AFTER[0]


class capture_at_first_call:
    """A context inside which a new shape is captured at its first call."""

    def __enter__(self):
        self.old, _CAPTURE_AFTER[0] = _CAPTURE_AFTER[0], 0

    def __exit__(self, *exc):
        _CAPTURE_AFTER[0] = self.old
