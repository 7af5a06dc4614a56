"""The one error type of tfdet.export."""


class ExportError(ValueError):
    """An export that cannot be done: bad arguments, an existing target, a missing converter.

    The message names the path or argument and the reason.
    """
