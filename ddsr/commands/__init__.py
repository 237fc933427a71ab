"""``ddsr`` sub-commands, one module each (``NAME``, ``HELP``, ``add_arguments(parser)``, ``run(args)``)."""
import json

from ddsr.errors import DDSRError


def arch_from_args(arch: str | None, arch_kwargs: str) -> dict | None:
    """``{'type': arch, **kwargs}`` of ``--arch`` / ``--arch-kwargs`` (a JSON object); None without ``--arch``."""
    try:
        kwargs = json.loads(arch_kwargs)
    except json.JSONDecodeError as err:
        raise DDSRError(f'--arch-kwargs is not valid JSON: {err}') from None
    if not isinstance(kwargs, dict):
        raise DDSRError(f'--arch-kwargs must be a JSON object, got {arch_kwargs}')
    return {'type': arch, **kwargs} if arch else None
