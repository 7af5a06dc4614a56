"""The one exception the converter raises for bad input."""

from __future__ import annotations


class ConversionError(Exception):
    """Bad input that stops a conversion: names the file and the reason.

    The command line prints ``str(error)`` as one line and exits non-zero;
    no traceback, because the fix is in the data, not in the code.
    """

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason
