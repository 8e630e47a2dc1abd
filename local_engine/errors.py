"""The engine's own errors; the server maps each one to an HTTP status."""


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class ModelLoadError(EngineError):
    """The model directory cannot be served: a missing file or an unsupported architecture."""


class InvalidRequestError(EngineError):
    """A request the engine can never serve; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class EngineOverloadedError(EngineError):
    """The admission limit is reached; the client may retry later."""
