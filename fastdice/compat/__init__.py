"""Drop-in replacements for the Dice losses of other libraries.

``fastdice.compat.monai`` mirrors MONAI 1.6's ``monai.losses`` classes and
``fastdice.compat.smp`` mirrors segmentation_models_pytorch 0.6's
``segmentation_models_pytorch.losses`` classes: same constructor signatures,
defaults, validation and numbers, computed by the fused fastdice ops. Neither
library needs to be installed. Import the submodule you need, e.g.
``from fastdice.compat.monai import DiceLoss``.
"""
