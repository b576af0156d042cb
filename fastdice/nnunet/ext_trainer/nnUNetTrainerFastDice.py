# nnU-Net's external trainer folder (nnUNet_extTrainer) entry for fastdice: every trainer of
# fastdice.nnunet.trainer (nnUNetTrainerFastDice and its _<N>epochs variants).
from fastdice.nnunet.trainer import *  # noqa: F401,F403
