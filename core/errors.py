"""The small exception tree every domain raises at the database boundary."""


class OemrError(Exception):
    """Base of all oem-retention errors."""


class DatabaseUnavailableError(OemrError):
    """The database could not be reached or dropped the connection; retrying may help."""


class MigrationError(OemrError):
    """The migrations on disk and in the database disagree, or one failed to apply."""
