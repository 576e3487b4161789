"""Converters print progress, warnings and log lines on every call; our command prints one report instead."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_converter(*logger_names: str) -> Iterator[None]:
    """Silence stdout, warnings and the named loggers (the root logger when none is named) below ERROR."""
    loggers = [logging.getLogger(name) for name in logger_names] or [logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
