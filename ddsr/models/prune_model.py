"""PruneSRModel: the ``model_type`` of ddsr's pruning option files; ``prune.mode`` picks the procedure.

=========  ===========================================================  ==========================
mode       procedure                                                    class
=========  ===========================================================  ==========================
proximal   sparsity-regularised training + compact net (Jiang et al.)   ProximalPruneSRModel
compress   dense checkpoint -> compact net, no regulariser (stage 2)    ProximalPruneSRModel
iterative  DIPNet's iterative L2 filter pruning + fine-tuning           IterativePruneSRModel
finetune   plain training of a pruned, self-describing network          PrunedFinetuneSRModel
=========  ===========================================================  ==========================

Each class is registered under its own name too, so an option file may name it directly. ``PruneSRModel`` itself
is a factory function registered under that name (BasicSR's ``build_model`` calls ``MODEL_REGISTRY.get(type)(opt)``):
it returns an instance of the procedure's class; its ``procedure`` attribute tells option checks which class that is.
"""
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from ddsr.errors import DDSRError
from ddsr.models.iterative_prune_model import IterativePruneSRModel
from ddsr.models.proximal_prune_model import ProximalPruneSRModel
from ddsr.models.pruned_finetune_model import PrunedFinetuneSRModel

PROCEDURES: dict[str, type[SRModel]] = {'proximal': ProximalPruneSRModel, 'compress': ProximalPruneSRModel,
                                        'iterative': IterativePruneSRModel, 'finetune': PrunedFinetuneSRModel}


def procedure(opt: dict) -> type[SRModel]:
    """The model class of ``opt['prune']['mode']`` (default ``proximal``)."""
    mode = (opt.get('prune') or {}).get('mode', 'proximal')
    if mode not in PROCEDURES:
        raise DDSRError(f"prune.mode: {mode!r} is not one of {', '.join(PROCEDURES)}")
    return PROCEDURES[mode]


@MODEL_REGISTRY.register()
def PruneSRModel(opt: dict) -> SRModel:  # noqa: N802  (the model_type name option files use)
    """The model of ``prune.mode`` (see the module docstring), built from ``opt``."""
    return procedure(opt)(opt)


PruneSRModel.procedure = procedure  # read by ddsr.checks (which class it builds)
