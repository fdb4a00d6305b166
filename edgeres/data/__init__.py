"""Data sets and transforms: ImageFolder, CIFAR python batches, ``.npz`` and the built-in generated set.

Pillow + numpy only (no torchvision, and nothing here imports torch): an
:class:`ImageDataset` item is ``(float32 (3, H, W), int label)``, which a PyTorch
``DataLoader`` collates as is.

    >>> from edgeres.data import open_dataset, iter_batches
    >>> from edgeres.preprocessing import cifar_preprocessing
    >>> ds = open_dataset("builtin", "val", cifar_preprocessing())
    >>> x, y = next(iter_batches(ds, 64))
"""

from edgeres.data.builtin import BUILTIN_CLASSES, generate, write_image_folder
from edgeres.data.dataset import (
    DataWarning,
    ImageDataset,
    iter_batches,
    split_train_val,
    take_balanced,
)
from edgeres.data.folder import IMAGE_EXTENSIONS, scan_folder
from edgeres.data.sources import BUILTIN_SIZES, SPLITS, open_dataset, resolve_split
from edgeres.data.transforms import augment, load_image, preprocess

__all__ = [
    "BUILTIN_CLASSES",
    "BUILTIN_SIZES",
    "DataWarning",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "SPLITS",
    "augment",
    "generate",
    "iter_batches",
    "load_image",
    "open_dataset",
    "preprocess",
    "resolve_split",
    "scan_folder",
    "split_train_val",
    "take_balanced",
    "write_image_folder",
]
