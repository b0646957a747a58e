"""Errors that mean "the user gave us something wrong".

The CLI turns every :class:`SegbenchError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class SegbenchError(Exception):
    """Bad input: a config, a path, a name or a file the user supplied."""


class ConfigError(SegbenchError):
    """The benchmark YAML or a command-line option is invalid."""


class DatasetError(SegbenchError):
    """A dataset path is missing or a dataset file is malformed."""


class WeightsError(SegbenchError):
    """Model weights cannot be read or do not fit the model."""


class RunFileError(SegbenchError):
    """A run directory's file is missing where it must be, unreadable or not what segbench writes."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" when it has none): enough for a one-line report."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``: enough to read in a table; the log keeps the traceback."""
    first = first_line(exc)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc``, or what it was raised from or during, is torch's CUDA out-of-memory error: a
    failing CUDA-graph capture body is often masked by the error that ending the capture raises. The
    chain is followed 8 links deep."""
    import torch  # here, not at the top: the errors every module imports need no torch

    for _ in range(8):
        if exc is None:
            return False
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
