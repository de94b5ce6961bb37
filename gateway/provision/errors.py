"""The one error type of provisioning."""


class ProvisionError(Exception):
    """Provisioning cannot go on; the message says what to fix."""
