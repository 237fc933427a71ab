"""Statistics of seeded, paired ablations: mean, sample std and a t-interval of the paired differences.

Two variants trained with the same seeds give one difference per seed, ``d_i = b_i - a_i``. The interval is the
Student t-interval of their mean, ``mean(d) +- t_{1 - alpha/2, n-1} * sd(d) / sqrt(n)`` with the sample standard
deviation (ddof 1): it assumes the per-seed differences are independent and roughly normal, which is the usual
assumption for a handful of seeds; with n = 3 the quantile is large (4.303), so only consistent effects exclude 0.
"""
import math
from collections.abc import Sequence

from scipy import stats as _scipy_stats


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; nan for fewer than 2 values)."""
    n = len(values)
    if n == 0:
        raise ValueError('no values')
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def t_quantile(confidence: float, dof: int) -> float:
    """Two-sided Student t quantile ``t_{(1 + confidence) / 2, dof}`` (e.g. 4.3027 for 0.95 and 2)."""
    if dof < 1:
        raise ValueError(f'need at least 1 degree of freedom, got {dof}')
    return float(_scipy_stats.t.ppf((1 + confidence) / 2, dof))


def paired_interval(baseline: Sequence[float], variant: Sequence[float], confidence: float = 0.95) -> dict:
    """Paired comparison of ``variant`` against ``baseline`` (same seeds, same order).

    Returns ``n``, ``baseline``/``variant`` (mean, std), ``diffs`` (variant - baseline per seed), ``mean_diff``,
    ``sd_diff``, ``t`` (quantile), ``half_width``, ``low``, ``high`` and ``excludes_zero``. For n < 2 the interval
    is undefined (nan bounds, ``excludes_zero`` False).
    """
    if len(baseline) != len(variant):
        raise ValueError(f'paired values differ in length: {len(baseline)} vs {len(variant)}')
    diffs = [b - a for a, b in zip(baseline, variant, strict=True)]
    n = len(diffs)
    mean_diff, sd_diff = mean_std(diffs)
    if n >= 2:
        t = t_quantile(confidence, n - 1)
        half = t * sd_diff / math.sqrt(n)
    else:
        t = half = math.nan
    low, high = mean_diff - half, mean_diff + half
    return {'n': n, 'confidence': confidence, 'baseline': mean_std(baseline), 'variant': mean_std(variant),
            'diffs': diffs, 'mean_diff': mean_diff, 'sd_diff': sd_diff, 't': t, 'half_width': half, 'low': low,
            'high': high, 'excludes_zero': bool(n >= 2 and (low > 0 or high < 0))}
