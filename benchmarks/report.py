"""What the end-to-end and forward-limit benchmarks print beside their figures: the machine's load (a time on a
shared machine means something only next to it) and the report itself, also written to ``--out``."""
from pathlib import Path


def load_average() -> str:
    """``load average 1m, 5m, 15m`` from ``/proc/loadavg`` (``n/a`` where there is none)."""
    try:
        return 'load average ' + ', '.join(open('/proc/loadavg').read().split()[:3])
    except OSError:
        return 'load average n/a'


def publish(report: str, out: str | None) -> None:
    """Print ``report``; with ``--out``, write it there too (Markdown for ``benchmarks/results/``)."""
    print(report)
    if out:
        Path(out).write_text(report + '\n')
