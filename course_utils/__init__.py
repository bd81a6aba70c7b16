"""course_utils: the library behind the advanced-convolutions course notebooks.

Data (``course_utils.data``), layers (``course_utils.layers``), models (``course_utils.models``),
training (``course_utils.training``), arithmetic, inspection and plots. Notebooks import from here;
nothing is copy-pasted between them.
"""
from .arithmetic import conv_macs, conv_output_size, conv_params
from .config import TrainConfig
from .inspection import receptive_field, stages, summary
from .runtime import get_device, is_smoke, seed_everything

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
