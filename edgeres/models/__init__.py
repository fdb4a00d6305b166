"""The model zoo: ImageNet and CIFAR ResNets (and their plain baselines).

Importing this package registers every model::

    from edgeres.models import create_model, list_models
    model = create_model("resnet20", num_classes=10)            # CIFAR, option A shortcuts
    model = create_model("resnet50", shortcut="C")               # ImageNet, projections everywhere
    [info.name for info in list_models("plain*")]

Weights: :mod:`edgeres.models.weights` (``load_pretrained``, ``apply_state_dict``).
"""

from edgeres.models import cifar, resnet  # noqa: F401  (registers the models)
from edgeres.models.registry import ModelInfo, create_model, get_model_info, list_models, register_model

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "register_model"]
