"""course_utils: the library behind the advanced-convolutions course notebooks.

Data (``course_utils.data``), layers (``course_utils.layers``), models (``course_utils.models``),
training (``course_utils.training``), arithmetic, inspection and plots. Notebooks import from here;
nothing is copy-pasted between them.
"""
import os

# albumentations (2.x) asks PyPI for a newer version each time it is imported, and warns when it cannot:
# offline (the kit's own data path, a classroom without internet) that warning lands in a notebook's
# output, which nbval compares, and the tests turn it into an error. The kit never needs the check:
# it is turned off here, before anything imports albumentations, unless you set the variable yourself.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from .arithmetic import conv_macs, conv_output_size, conv_params  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .inspection import receptive_field, stages, summary  # noqa: E402
from .runtime import get_device, is_smoke, seed_everything  # noqa: E402

__all__ = [
    "TrainConfig",
    "conv_macs",
    "conv_output_size",
    "conv_params",
    "get_device",
    "is_smoke",
    "receptive_field",
    "seed_everything",
    "stages",
    "summary",
]
__version__ = "0.1.0"
