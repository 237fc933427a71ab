"""Progress display for long work: a live tqdm bar on a terminal, plain periodic lines otherwise.

tqdm redraws its bar with carriage returns; written to a file or a pipe (CI logs, ``| tee``), every redraw becomes
part of the log. :func:`progress` returns a tqdm bar when the stream is a terminal and a :class:`LineProgress`
otherwise, which prints one plain line (``desc: n/total (pct) rate eta``) at the first step (so a log shows at once
that the work started), then at most every ``every`` seconds, and at the end. Both take ``update``,
``set_postfix_str``, ``write`` and ``close`` and work as context managers; :func:`track` wraps an iterable.
This is the only module that uses tqdm (``tests/test_layout.py``).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar('T')
LINE_INTERVAL_S = 30.0  # plain-line mode: at most one progress line per this many seconds (chosen here: readable logs)


def format_duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03`` style, never negative."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f'{hours}:{minutes:02d}:{secs:02d}' if hours else f'{minutes}:{secs:02d}'


def is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """tqdm's small API, printing plain lines (no carriage returns) for logs and pipes.

    Args:
        total: Number of steps (None: unknown).
        desc: Prefix of every line.
        unit: Step unit for the rate (``it``, ``img``, ``B``).
        file: Output stream. Default: stderr.
        every: Seconds between lines (the first and the last step always print). ``0``: a line per update.
        initial: Steps already done (resume).
        unit_scale: Show amounts with binary prefixes (``unit='B'``: KiB, MiB, GiB; rates as ``MiB/s``).
    """

    def __init__(self, total: int | None = None, desc: str = '', unit: str = 'it', file: IO[str] | None = None,
                 every: float = LINE_INTERVAL_S, initial: int = 0, unit_scale: bool = False) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.file = file if file is not None else sys.stderr
        self.n: float = initial
        self.start_n = initial
        self.unit_scale = unit_scale
        self.postfix = ''
        self.start = self.last = time.monotonic()
        self.printed: float | None = None  # the step count of the last printed line
        self.closed = False

    def _amount(self, n: float) -> str:
        """``n`` as shown: a plain count, or with ``unit_scale`` a binary-prefixed amount carrying the unit."""
        if not self.unit_scale:
            return f'{int(n)}'
        for prefix, size in (('Gi', 2**30), ('Mi', 2**20), ('Ki', 2**10)):
            if n >= size:
                return f'{n / size:.1f} {prefix}{self.unit}'
        return f'{int(n)} {self.unit}'

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f'{self.desc}: ' if self.desc else '', self._amount(self.n)]
        if self.total:
            parts.append(f'/{self._amount(self.total)} ({100 * self.n / self.total:.0f}%)')
        if rate > 0:
            parts.append(f', {self._amount(rate)}/s' if self.unit_scale else f', {rate:.2f} {self.unit}/s')
            if self.total:
                parts.append(f', eta {format_duration((self.total - self.n) / rate)}')
        parts.append(f', elapsed {format_duration(elapsed)}')
        if self.postfix:
            parts.append(f', {self.postfix}')
        return ''.join(parts)

    def _print(self) -> None:
        self.last, self.printed = time.monotonic(), self.n
        print(self.line(), file=self.file, flush=True)

    def update(self, n: float = 1) -> None:
        self.n += n
        finished = self.total is not None and self.n >= self.total
        if finished or self.printed is None or time.monotonic() - self.last >= self.every:
            self._print()

    def set_postfix_str(self, text: str = '', refresh: bool = True) -> None:
        self.postfix = text

    def write(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def close(self) -> None:
        """Print the final count if a step since the last line went unreported (unknown totals end here)."""
        if not self.closed and self.printed is not None and self.n != self.printed:
            self._print()
        self.closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(total: int | None = None, desc: str = '', unit: str = 'it', file: IO[str] | None = None,
             every: float = LINE_INTERVAL_S, initial: int = 0, unit_scale: bool = False,
             disable: bool = False) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere (``disable``: a silent tqdm)."""
    stream = file if file is not None else sys.stderr
    if disable or is_terminal(stream):
        return tqdm(total=total, desc=desc or None, unit=unit, file=stream, initial=initial, disable=disable,
                    unit_scale=unit_scale, unit_divisor=1024 if unit_scale else 1000, dynamic_ncols=True,
                    smoothing=0.05)
    return LineProgress(total, desc, unit, stream, every, initial, unit_scale)


def track(items: Iterable[T], total: int | None = None, desc: str = '', unit: str = 'it',
          file: IO[str] | None = None, every: float = LINE_INTERVAL_S, disable: bool = False) -> Iterator[T]:
    """Yield ``items`` with a :func:`progress` display advanced by one per item (``total`` defaults to ``len``)."""
    if total is None and hasattr(items, '__len__'):
        total = len(items)  # type: ignore[arg-type]
    with progress(total, desc, unit, file, every, disable=disable) as bar:
        for item in items:
            yield item
            bar.update(1)
