# nnU-Net's external trainer folder (nnUNet_extTrainer) entry for fastdice.
from fastdice.nnunet.trainer import nnUNetTrainerFastDice  # noqa: F401
