"""PrunedFinetuneSRModel: plain training of a pruned network (DIPNet pipeline, the fine-tuning after pruning).

No regulariser, no pruning: an SRModel whose network is rebuilt from the self-describing pretrained checkpoint
(:class:`ddsr.models.parts.self_describing.SelfDescribingSRModel`) and saved self-describing. ``PruneSRModel`` with
``prune.mode: finetune`` builds this class.
"""
from basicsr.utils.registry import MODEL_REGISTRY

from ddsr.models.parts.self_describing import SelfDescribingSRModel


@MODEL_REGISTRY.register()
class PrunedFinetuneSRModel(SelfDescribingSRModel):
    """Fine-tuning of a pruned, self-describing network."""
