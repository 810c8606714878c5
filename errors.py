"""The one exception type for bad user input.

Every loader, reader, scorer and CLI command raises :class:`InputError` (a ``ValueError``) with a
message that says which file / record / field is wrong, what is wrong, and what to do. The CLI
prints such errors without a traceback; anything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from the user: a file, record, option or argument that cannot be used as given."""
