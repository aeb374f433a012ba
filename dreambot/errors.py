"""The error every rule of the shared kernel raises for a request a member can fix."""


class InvalidRequest(ValueError):
    """A request a user can fix; the message says what to change."""
