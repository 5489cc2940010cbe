"""Drawing predictions (and ground truth) on images, headless: OpenCV only, written as PNG."""
import os

import cv2
import numpy as np

from maskplus.evaluation.paste import CroppedMask


def _palette(n):
    """``n`` distinct, saturated BGR colours (golden-ratio hue steps)."""
    if n == 0:
        return []
    hues = (np.arange(n) * 0.618033988749895 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 220, np.uint8), np.full(n, 255, np.uint8)], axis=1)[None]
    return [tuple(int(c) for c in bgr) for bgr in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]]


def draw_instances(img_bgr, boxes, captions, masks=None, alpha=0.5):
    """Translucent masks with outlines, box outlines and captions; returns a new uint8 image.
    ``masks``: per instance None, a full-image binary array or a :class:`CroppedMask`."""
    out = np.ascontiguousarray(img_bgr, dtype=np.uint8).copy()
    colours = _palette(len(boxes))
    if masks is not None:
        for mask, colour in zip(masks, colours):
            if mask is None:
                continue
            # a cropped mask is drawn over its region only: the same pixels, no full-image copy
            y0, x0, m = (mask.y0, mask.x0, mask.mask) if isinstance(mask, CroppedMask) else (0, 0, mask)
            m = np.asarray(m).astype(bool)
            region = out[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
            region[m] = (region[m] * (1 - alpha) + np.array(colour) * alpha).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                           offset=(x0, y0))
            cv2.drawContours(out, contours, -1, colour, 1, cv2.LINE_AA)
    scale = max(0.35, min(out.shape[:2]) / 800.0)
    for box, caption, colour in zip(boxes, captions, colours):
        x1, y1, x2, y2 = [int(round(float(v))) for v in box]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1 if scale < 0.6 else 2)
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + 2
        cv2.rectangle(out, (x1, ty - th - 1), (x1 + tw + 2, ty + base - 1), colour, -1)
        cv2.putText(out, caption, (x1 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def draw_predictions(img_bgr, boxes, scores, labels, masks, class_names, score_thresh=0.5):
    """Detections with score >= ``score_thresh``; captions "class score". ``class_names[0]`` is BG."""
    keep = [k for k, s in enumerate(scores) if s >= score_thresh]
    captions = [f"{class_names[int(labels[k])]} {scores[k]:.2f}" for k in keep]
    kept_masks = [masks[k] for k in keep] if masks is not None else None
    return draw_instances(img_bgr, [boxes[k] for k in keep], captions, kept_masks)


def save_image(path, img):
    """Write ``img`` to ``path`` (format from the extension), creating the folder."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        written = cv2.imwrite(path, img)
    except cv2.error as e:  # e.g. an extension OpenCV has no writer for
        raise OSError(f"Could not write the image '{path}': {e.err}") from None
    if not written:
        raise OSError(f"Could not write the image '{path}'.")
    return path
