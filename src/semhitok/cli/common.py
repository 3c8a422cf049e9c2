"""The pieces the commands share, by concern, gathered under one name for the command modules.

* :mod:`.messages`: warning and info lines, progress bars, the help layout;
* :mod:`.options`: option types and the shared options (model, resize, batch size, precision);
* :mod:`.model_loading`: ``--model`` / ``--preset`` -> a model, bad folders -> CLIError;
* :mod:`.images`: image inputs checked, read, fit and batched;
* :mod:`.outputs`: atomic outputs (:mod:`semhitok.atomic`), output names, inputs never overwritten.
"""

from __future__ import annotations

from .images import check_image_paths, image_batches, load_fitted
from .messages import PROG, HelpFormatter, info, progress, warn
from .model_loading import LoadedModel, load_model, resolve_device
from .options import PRESET_SEED, RESIZE_CHOICES, add_batch_size_option, add_model_options, add_precision_option, add_resize_option, positive_int
from .outputs import OutputDir, OutputFile, output_stems, refuse_overwriting_inputs

__all__ = [
    "PRESET_SEED",
    "PROG",
    "RESIZE_CHOICES",
    "HelpFormatter",
    "LoadedModel",
    "OutputDir",
    "OutputFile",
    "add_batch_size_option",
    "add_model_options",
    "add_precision_option",
    "add_resize_option",
    "check_image_paths",
    "image_batches",
    "info",
    "load_fitted",
    "load_model",
    "output_stems",
    "progress",
    "positive_int",
    "refuse_overwriting_inputs",
    "resolve_device",
    "warn",
]
