"""``nnUNetTrainerFastDice``: nnU-Net's trainer with its loss computed by fastdice's fused ops.

Only ``_build_loss`` differs from ``nnUNetTrainer``: the same configuration as nnU-Net 2.8.1
(Dice + CE on softmax logits with batch Dice from the plans, smooth 1e-5, no background, the
dataset's ignore label; Dice + BCE with the background and the ignore channel for region-based
datasets; deep-supervision weights 1, 1/2, 1/4, ... with the lowest output at 0 (1e-6 under DDP
without compile, as nnU-Net), normalised to sum 1), built from ``fastdice.compat.nnunet``. The
Dice part is not wrapped in ``torch.compile``: it is one fused op already.

Shorter runs: ``nnUNetTrainerFastDice_1epoch``, ``_5epochs``, ``_10epochs``, ``_20epochs``,
``_50epochs``, ``_100epochs``, ``_250epochs``, ``_500epochs``, ``_750epochs``, ``_2000epochs``,
``_4000epochs``, ``_8000epochs``: nnU-Net's ``nnUNetTrainer_<N>epochs`` lengths with fastdice's loss.
Any other nnU-Net variant combines in one line, fastdice's trainer first, in a module of a folder
listed in ``nnUNet_extTrainer``::

    class nnUNetTrainerFastDice_250epochs_NoMirroring(nnUNetTrainerFastDice, nnUNetTrainer_250epochs_NoMirroring): pass

(no ``__init__`` of its own: nnU-Net records a trainer's ``__init__`` arguments by the names of
its signature, so an ``__init__(self, *args, **kwargs)`` fails with ``KeyError: 'args'``; one
that spells out nnU-Net's five arguments, as below, is fine).
"""

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..compat.nnunet import DC_and_BCE_loss, DC_and_CE_loss, DeepSupervisionWrapper, MemoryEfficientSoftDiceLoss


def deep_supervision_weights(num_outputs: int, is_ddp: bool, compiled: bool) -> np.ndarray:
    """nnU-Net's weights of the deep-supervision outputs (highest resolution first)."""
    weights = np.array([1 / (2 ** i) for i in range(num_outputs)])
    # nnU-Net: a zero weight makes DDP complain about unused parameters unless compiled.
    weights[-1] = 1e-6 if is_ddp and not compiled else 0
    return weights / weights.sum()


class nnUNetTrainerFastDice(nnUNetTrainer):
    """nnUNetTrainer whose loss is fastdice's (same numbers, one fused pass per output)."""

    def _build_loss(self):
        dice_kwargs = {"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5, "ddp": self.is_ddp}
        if self.label_manager.has_regions:
            loss = DC_and_BCE_loss(
                {}, dict(dice_kwargs, do_bg=True),
                use_ignore_label=self.label_manager.ignore_label is not None,
                dice_class=MemoryEfficientSoftDiceLoss,
            )
        else:
            loss = DC_and_CE_loss(
                dict(dice_kwargs, do_bg=False), {}, weight_ce=1, weight_dice=1,
                ignore_label=self.label_manager.ignore_label, dice_class=MemoryEfficientSoftDiceLoss,
            )
        if self.enable_deep_supervision:
            scales = self._get_deep_supervision_scales()
            loss = DeepSupervisionWrapper(loss, deep_supervision_weights(len(scales), self.is_ddp, self._do_i_compile()))
        return loss


#: The run lengths of nnU-Net's own ``nnUNetTrainer_<N>epochs`` variants.
EPOCH_VARIANTS = (1, 5, 10, 20, 50, 100, 250, 500, 750, 2000, 4000, 8000)


def _variant_name(num_epochs: int) -> str:
    return f"nnUNetTrainerFastDice_{num_epochs}epoch{'s' if num_epochs != 1 else ''}"


def _with_epochs(num_epochs: int) -> type:
    """nnUNetTrainerFastDice running ``num_epochs`` epochs, with nnU-Net's full ``__init__``
    signature (nnU-Net stores the constructor arguments in checkpoints by these names)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        nnUNetTrainerFastDice.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = num_epochs

    name = _variant_name(num_epochs)
    __init__.__qualname__ = f"{name}.__init__"
    doc = f"nnUNetTrainerFastDice for {num_epochs} epochs (as nnU-Net's nnUNetTrainer_{name.split('_')[1]})."
    return type(name, (nnUNetTrainerFastDice,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


# Module attributes: nnU-Net finds trainers by name among a module's attributes.
for _n in EPOCH_VARIANTS:
    globals()[_variant_name(_n)] = _with_epochs(_n)
del _n

#: Every trainer this module defines, by the name ``-tr`` takes.
TRAINER_NAMES = ("nnUNetTrainerFastDice",) + tuple(_variant_name(n) for n in EPOCH_VARIANTS)
__all__ = list(TRAINER_NAMES)  # what the nnUNet_extTrainer module and install-trainer's file import
