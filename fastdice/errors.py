"""The exceptions fastdice defines."""


class LabelOutOfRangeError(ValueError, RuntimeError, IndexError):
    """A label of a label map outside [0, C) (or the regions' [0, 64)) that is not
    ignore_index, with the sample and spatial position where it is. A ValueError
    (what fastdice raises for bad input), a RuntimeError (what MONAI's
    ``one_hot``, smp's ``F.one_hot`` and nnU-Net's ``scatter_`` raise there) and an
    IndexError (torch's type for an index out of range), so that code written for
    any of them catches it. The extension raises it as an IndexError, which
    :func:`fastdice.functional.dice_stats` turns into this; inside a graph that
    ``torch.compile`` runs, the IndexError reaches the caller as it is."""
