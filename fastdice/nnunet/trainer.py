"""``nnUNetTrainerFastDice``: nnU-Net's trainer with its loss computed by fastdice's fused ops.

Only ``_build_loss`` differs from ``nnUNetTrainer``: the same configuration as nnU-Net 2.8.1
(Dice + CE on softmax logits with batch Dice from the plans, smooth 1e-5, no background, the
dataset's ignore label; Dice + BCE with the background and the ignore channel for region-based
datasets; deep-supervision weights 1, 1/2, 1/4, ... with the lowest output at 0 (1e-6 under DDP
without compile, as nnU-Net), normalised to sum 1), built from ``fastdice.compat.nnunet``. The
Dice part is not wrapped in ``torch.compile``: it is one fused op already.
"""

import numpy as np
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
