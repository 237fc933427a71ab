"""Benchmark tables: terminal / Markdown text, CSV, JSON, and a quality-vs-cost plot (matplotlib, Agg)."""
import csv
import json
import os
from collections.abc import Sequence
from os import path as osp

# (column, header, format); a missing or None value prints as '-'
EFFICIENCY_COLUMNS: list[tuple[str, str, str]] = [
    ('name', 'model', '{}'), ('form', 'form', '{}'), ('params', 'params', '{:,}'),
    ('macs', 'GMACs@256', '{:.2f}'), ('activations', 'Acts(M)@256', '{:.2f}'), ('convs', 'convs', '{}'),
    ('input_size', 'input', '{}'), ('runtime_ms', 'runtime ms (median)', '{:.1f}'),
    ('runtime_iqr_ms', 'IQR ms', '{:.1f}'), ('memory_mb', 'peak mem MB', '{:.1f}'),
]
SCALED = {'macs': 1e9, 'activations': 1e6}


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or value == '':
        return '-'
    return fmt.format(value / SCALED[key] if key in SCALED else value)


def columns_for(rows: Sequence[dict], base: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """``base`` plus one column per extra numeric key (e.g. ``psnr_Set5``) found in the rows."""
    known = {key for key, _, _ in base}
    extra = []
    for row in rows:
        extra += [k for k in row if k not in known and k not in extra and (k.startswith(('psnr', 'ssim')))]
    return base + [(k, k, '{:.4f}' if k.startswith('ssim') else '{:.2f}') for k in extra]


def format_table(rows: Sequence[dict], columns: list[tuple[str, str, str]], markdown: bool = False) -> str:
    """Aligned text table (or a Markdown table) of ``rows``."""
    cells = [[header for _, header, _ in columns]] + [[_cell(r, k, f) for k, _, f in columns] for r in rows]
    if markdown:
        lines = ['| ' + ' | '.join(line) + ' |' for line in cells]
        lines.insert(1, '|' + '|'.join('---' if i < 2 else '---:' for i in range(len(columns))) + '|')
        return '\n'.join(lines)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    text = [('  '.join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=False))))
            for line in cells]
    text.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(text)


def write_csv_json(rows: Sequence[dict], stem: str) -> list[str]:
    """``<stem>.csv`` and ``<stem>.json`` of ``rows``; returns the paths."""
    os.makedirs(osp.dirname(osp.abspath(stem)), exist_ok=True)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(stem + '.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    with open(stem + '.json', 'w') as f:
        json.dump(list(rows), f, indent=2)
    return [stem + '.csv', stem + '.json']


def plot_quality_cost(rows: Sequence[dict], psnr_key: str, path: str, title: str = '',
                      costs: Sequence[str] = ('params', 'macs', 'runtime_ms')) -> str | None:
    """PSNR vs params / GMACs / runtime (the ``costs`` given), one point per row that has ``psnr_key``; None if no
    row has it."""
    points = [r for r in rows if r.get(psnr_key) is not None]
    if not points:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    axes_spec = [spec for spec in (('params', 1e3, 'params (K)'), ('macs', 1e9, 'GMACs @256x256'),
                                   ('runtime_ms', 1, 'runtime (ms)')) if spec[0] in costs]
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(5 * len(axes_spec), 4.5), squeeze=False)
    axes = axes[0]
    for ax, (key, div, label) in zip(axes, axes_spec, strict=False):
        for row in points:
            if row.get(key) is None:
                continue
            x = row[key] / div
            ax.scatter(x, row[psnr_key])
            ax.annotate(f"{row['name']} ({row['form']})" if row.get('form', '-') != '-' else row['name'],
                        (x, row[psnr_key]), fontsize=7, xytext=(3, 3), textcoords='offset points')
        ax.set_xscale('log')
        ax.set_xlabel(label)
        ax.set_ylabel(f'{psnr_key} (dB)')
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
