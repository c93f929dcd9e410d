"""The messages MMEngine's current logger emits inside a block."""
import contextlib
import logging
from typing import Iterator, List

from mmengine.logging import MMLogger


@contextlib.contextmanager
def captured_log() -> Iterator[List[str]]:
    """``with captured_log() as lines:`` collects the message of every record the
    current :class:`MMLogger` handles in the block (``print_log(..., 'current')``)."""
    lines: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
