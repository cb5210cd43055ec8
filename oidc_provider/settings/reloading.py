"""A configuration file that operators edit while the provider runs.

It is parsed at start-up (a bad file there is fatal) and again when its mtime or size
changes, checked at most once a second. An edit that does not validate is logged with
the file and field and the last good version keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Generic, TypeVar

from .provider import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReloadingFile(Generic[T]):
    CHECK_INTERVAL = 1.0

    def __init__(self, path: Path, parse: Callable[[Path], T]):
        self.path = path
        self._parse = parse
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._value = parse(path)
        self._checked_at = time.monotonic()
        self.last_error: str | None = None

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    @property
    def value(self) -> T:
        now = time.monotonic()
        if now - self._checked_at >= self.CHECK_INTERVAL:
            with self._lock:
                self._checked_at = now
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._value = self._parse(self.path)
                        self.last_error = None
                        log.info("reloaded %s", self.path)
                    except ConfigError as exc:
                        self.last_error = str(exc)
                        log.error("kept the last good version; %s", exc)
        return self._value
