"""Exception types. Every user-facing failure is a ``CloudMatrixError`` whose message is one clear line;
the CLI prints it and exits with code 2."""


class CloudMatrixError(Exception):
    """Base class for errors caused by user input (ids, files, deployments)."""


class UnknownIdError(CloudMatrixError):
    """A catalog id that does not exist; the message lists the valid ones."""

    def __init__(self, kind: str, value: str, valid: list[str]) -> None:
        super().__init__(f"unknown {kind} '{value}'; expected one of: {', '.join(sorted(valid))}")


class ConfigError(CloudMatrixError):
    """A malformed catalog, model config or scenario file; the message names the file and field."""


class InfeasibleDeploymentError(CloudMatrixError):
    """A deployment that cannot run; the message states the numbers that do not fit."""
