"""The one error type a user should see: a bad setting, named, with its fix."""


class ConfigError(Exception):
    """A setting the suite cannot run with.

    ``key`` names where the setting came from (``runs[1].image_size``, ``--micro-batch``,
    ``experiment.yaml``); the message says what is wrong and how to fix it. The CLI prints it
    as one line and exits with status 2.
    """

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def error_line(exc: ConfigError) -> str:
    """The single line a command prints for a bad setting (every exit-2 path uses it)."""
    return f"larsbench: error: {exc}".splitlines()[0]
