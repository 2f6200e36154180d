"""The small exception tree every domain raises at the database boundary."""


def first_line(exc: BaseException) -> str:
    r"""An error's first line, for a one-line status (its type's name when it says nothing).

    >>> first_line(ValueError("connection failed\nDETAIL: refused"))
    'connection failed'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OemrError(Exception):
    """Base of all oem-retention errors."""


class DatabaseUnavailableError(OemrError):
    """The database could not be reached or dropped the connection; retrying may help."""


class MigrationError(OemrError):
    """The migrations on disk and in the database disagree, or one failed to apply."""
