"""fastdice inside nnU-Net v2: the trainer ``nnUNetTrainerFastDice`` (fastdice.nnunet.trainer,
needs nnunetv2) and ``python -m fastdice.nnunet`` to make nnU-Net find it.

nnU-Net looks trainers up by class name in its own package (and, since 2.8, in the folders
of the ``nnUNet_extTrainer`` environment variable). Either::

    export nnUNet_extTrainer="$(python -m fastdice.nnunet ext-path)"   # nothing is written
    nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerFastDice

or ``python -m fastdice.nnunet install-trainer`` (writes a one-line module into nnU-Net's
trainer folder; ``python -m fastdice.nnunet uninstall-trainer`` removes it).
``nnUNetv2_predict`` of a fastdice-trained model looks the trainer up the same way: export
``nnUNet_extTrainer`` for it too (``python -m fastdice.nnunet`` prints the lines to export).
Shorter runs: ``-tr nnUNetTrainerFastDice_5epochs`` (and nnU-Net's other lengths, see
``fastdice.nnunet.trainer``).
"""

import os

#: The name nnU-Net's ``-tr`` option takes.
TRAINER_NAME = "nnUNetTrainerFastDice"

#: The folder to put in ``nnUNet_extTrainer``: it holds one module defining the trainer.
EXT_TRAINER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ext_trainer")
