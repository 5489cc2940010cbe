"""Full-image pastes for tests: the package pastes into :class:`CroppedMask` regions only (a
full image per detection would not fit in memory for large photos); tests compare whole images."""
from maskplus.evaluation.paste import paste_mask_cropped


def paste_mask_accurate(box, mask, height, width):
    """uint8 height x width mask of the sub-pixel aligned bilinear paste."""
    return paste_mask_cropped(box, mask, height, width, accurate=True).full()


def paste_mask_fast(box, mask, height, width):
    """uint8 height x width mask of Tensorpack's rounding paste."""
    return paste_mask_cropped(box, mask, height, width, accurate=False).full()
