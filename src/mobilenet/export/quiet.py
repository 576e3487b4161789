"""Converters print progress, warnings and log lines on every call; our command prints one report instead."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

from mobilenet.errors import MobilenetError


@contextlib.contextmanager
def quiet_converter(*logger_names: str) -> Iterator[None]:
    """Silence stdout, warnings, native stderr and the named loggers (the root logger when none is named) below
    ERROR. What native code printed is shown after all if the conversion fails: it may say why."""
    loggers = [logging.getLogger(name) for name in logger_names] or [logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), native_stderr_held():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def native_stderr_held() -> Iterator[None]:
    """Hold what C++ libraries (absl, oneDNN, XNNPACK) write to file descriptor 2; replay it only on failure."""
    fd = 2  # native code writes to the descriptor, whatever Python's sys.stderr has been replaced with
    sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 2 (a daemon): nothing to hold
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        except MobilenetError:
            raise  # says what is wrong in its own words
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))
