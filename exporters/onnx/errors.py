"""ExportError: the model or an export option cannot be exported (the message names the module,
input or option, and what was expected). A ValueError."""


class ExportError(ValueError):
    """The model or an export option cannot be exported (message names the problem)."""


class OutputWriteError(ExportError):
    """The graph was built but writing the output file failed (disk full, ...): a failure while
    running (exit 1), where the other ExportErrors are bad input (exit 2)."""
