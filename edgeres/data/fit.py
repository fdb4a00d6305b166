"""Does a data set look like what a model was trained on? A warning when clearly not.

Calibrating or validating a 224x224, 1000-class ImageNet model with 32x32 images of 10 classes
runs without error (the images are upscaled, the labels may even map by name) but measures
nothing useful. :func:`fit_warning` compares the images' own size (a few samples, before
preprocessing) and the number of classes in the data with the model's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeres.preprocessing import Preprocessing

#: Images this many times smaller than the model's input (in height or width) are "clearly" not its data.
UPSCALE_LIMIT = 2.0
#: A model with this many times more classes than the data has is "clearly" trained on other data.
CLASS_RATIO_LIMIT = 10
SAMPLES = 4


def _image_size(item: Any) -> tuple[int, int]:
    """(height, width) of an HWC array or a PIL image."""
    if isinstance(item, np.ndarray):
        return int(item.shape[0]), int(item.shape[1])
    w, h = item.size
    return int(h), int(w)


def fit_warning(ds: Any, pre: Preprocessing, purpose: str, data_classes: int | None = None) -> str | None:
    """A one-line warning when ``ds`` clearly does not fit the model of ``pre``, else None.

    ``purpose`` names the use ("calibration", "validation"); ``data_classes`` is the number of
    classes of the data (default: the distinct labels of ``ds``; unlabelled data is not compared).
    """
    problems = []
    n = min(len(ds), SAMPLES)
    if n:
        sizes = [_image_size(ds.raw(i)) for i in range(n)]
        h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
        mh, mw = pre.input_size
        if h * UPSCALE_LIMIT <= mh or w * UPSCALE_LIMIT <= mw:
            factor = max(mh / h, mw / w)
            problems.append(f"its images are {h}x{w}, the model takes {mh}x{mw} (upscaled {factor:.0f}x)")
    model_classes = len(pre.class_names)
    if data_classes is None and ds.labelled:
        labels = np.asarray(ds.labels)
        data_classes = int(np.unique(labels[labels >= 0]).size)
    if data_classes and model_classes and data_classes * CLASS_RATIO_LIMIT <= model_classes:
        problems.append(f"it has {data_classes} classes, the model {model_classes}")
    if not problems:
        return None
    return (f"{purpose} data {ds.source} does not look like this model's data: {' and '.join(problems)}; "
            "is it the right data set for this model?")
