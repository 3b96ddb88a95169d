"""ExportError: the model or an export option cannot be exported (the message names the module,
input or option, and what was expected). A ValueError."""


class ExportError(ValueError):
    """The model or an export option cannot be exported (message names the problem)."""
