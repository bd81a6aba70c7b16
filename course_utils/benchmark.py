"""Measurements, never hard-coded numbers: images per second of a data pipeline and of training steps.

Every result names the device and the settings it was measured with.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def pipeline_throughput(transform: Callable, images: np.ndarray, min_seconds: float = 1.0,
                        albumentations_style: bool = True) -> float:
    """Images per second of ``transform`` applied one image at a time in this process.

    ``albumentations_style``: call as ``transform(image=img)["image"]``; else ``transform(img)``.
    """
    call = (lambda img: transform(image=img)["image"]) if albumentations_style else transform
    for img in images[:8]:  # warm-up
        call(img)
    n, start = 0, time.perf_counter()
    while True:
        for img in images:
            call(img)
            n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n / elapsed
