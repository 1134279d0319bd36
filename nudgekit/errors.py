"""User-facing errors.

A `NudgekitError` carries one line that names the file / row / key at fault. The CLI prints that
line (no traceback) and exits non-zero; everything else is a bug and keeps its traceback.
"""


class NudgekitError(Exception):
    """An error caused by the user's input (config, path, data), reported as one line."""
