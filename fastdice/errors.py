"""The exceptions fastdice defines."""


class LabelOutOfRangeError(ValueError, RuntimeError):
    """A label of a label map outside [0, C) (or the regions' [0, 64)) that is not
    ignore_index, with the sample and spatial position where it is. A ValueError
    (what fastdice raises for bad input) and a RuntimeError (what MONAI's
    ``one_hot``, smp's ``F.one_hot`` and nnU-Net's ``scatter_`` raise there), so
    that code written for either catches it. The extension raises it as an
    IndexError, which :func:`fastdice.functional.dice_stats` turns into this."""
