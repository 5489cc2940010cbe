"""Test-time augmentation (maskplus/engine/tta.py): the views' runs, the merge and the masks' mean.

With stand-in networks: what each view is given and what comes back. On the tiny model (FPN,
C4 and Cascade, every technique the model family allows): one view at the test size gives exactly
the detections and masks of no augmentation; with a mirrored view and a second size, the
detections of the mirrored image are the mirrored detections of the image (the set of views is
the same, in another order)."""
import cv2
import numpy as np
import pytest

from maskplus.evaluation.tta import View, augmented_views
from tests.helpers import config_snapshot, configure, write_random_model

H, W = 30, 50  # a wide image: a mirror about the height would show


class FakeNetwork:
    """``detect`` returns the prepared detections of each call in turn and the call's number as its
    "features"; ``segment`` records what it is given and returns, for every box, a mask whose left
    column is 1 and the rest 0.1."""

    def __init__(self, detections):
        self.detections = list(detections)
        self.detect_shapes, self.segment_calls = [], []

    def detect(self, image):
        self.detect_shapes.append(image.shape)
        return tuple(self.detections.pop(0)) + (len(self.detect_shapes) - 1,)

    def segment(self, image, boxes, labels, features):
        self.segment_calls.append((image.shape, np.array(boxes), np.array(labels), features))
        masks = np.full((len(boxes), 4, 4), 0.1, np.float32)
        masks[:, :, 0] = 1.0
        return [masks]


def _predictor(net, views, max_size=1000.0):
    from maskplus.engine.tta import AugmentedPredictor
    return AugmentedPredictor(net.detect, net.segment, views, max_size, nms_thresh=0.5, score_thresh=0.05,
                              max_detections=100)


def test_each_view_is_resized_then_mirrored_and_the_masks_run_on_the_merged_boxes_in_each_view():
    image = np.zeros((H, W, 3), np.uint8)
    image[:, :10] = 200  # bright on the left: the mirrored view is bright on the right
    seen = []
    net = FakeNetwork([
        (np.array([[20, 10, 40, 30]], np.float32), np.array([0.9], np.float32), np.array([1])),  # (10, 5, 20, 15)
        (np.array([[60, 10, 80, 30]], np.float32), np.array([0.8], np.float32), np.array([1])),  # the same, mirrored
        (np.array([[0, 0, 15, 15]], np.float32), np.array([0.7], np.float32), np.array([2])),  # (0, 0, 10, 10), x1.5
    ])
    real_detect = net.detect
    net.detect = lambda img: seen.append(img.copy()) or real_detect(img)
    out = _predictor(net, [View(60, False), View(60, True), View(45, False)]).run_image(image)
    assert [s.shape for s in seen] == [(60, 100, 3), (60, 100, 3), (45, 75, 3)]
    assert seen[0][:, :20].mean() > 150 and seen[0][:, -20:].mean() == 0  # bright left
    assert seen[1][:, -20:].mean() > 150 and seen[1][:, :20].mean() == 0  # mirrored: bright right
    assert all(s.dtype == np.float32 for s in seen)
    np.testing.assert_allclose(out.boxes, [[10, 5, 20, 15], [0, 0, 10, 10]], atol=1e-5)
    np.testing.assert_allclose(out.scores, [0.9, 0.7])
    assert out.labels.tolist() == [1, 2] and out.orig_shape == (H, W)
    # the merged boxes, in each view's pixels, with their labels
    shapes, boxes, labels, features = zip(*net.segment_calls)
    assert [s[:2] for s in shapes] == [(60, 100), (60, 100), (45, 75)]
    assert features == (0, 1, 2)  # each view's own features (kept from its detection run)
    np.testing.assert_allclose(boxes[0], [[20, 10, 40, 30], [0, 0, 20, 20]], atol=1e-5)
    np.testing.assert_allclose(boxes[1], [[60, 10, 80, 30], [80, 0, 100, 20]], atol=1e-5)
    np.testing.assert_allclose(boxes[2], [[15, 7.5, 30, 22.5], [0, 0, 15, 15]], atol=1e-5)
    assert all(lab.tolist() == [1, 2] for lab in labels)
    # the mirrored view's left column is the image's right one: the mean is 1 on the left (two
    # views), 0.1 in the middle, 0.4 on the right (the mirrored view's 1 among two 0.1)
    np.testing.assert_allclose(out.masks[:, 0], [[(1 + 1 + 0.1) / 3, 0.1, 0.1, (0.1 + 0.1 + 1) / 3]] * 2, atol=1e-6)


def test_an_image_without_detections_gets_empty_masks_from_one_run():
    none = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    net = FakeNetwork([none, none])
    out = _predictor(net, augmented_views([60], flip=True)).run_image(np.zeros((H, W, 3), np.uint8))
    assert out.boxes.shape == (0, 4) and out.masks.shape == (0, 4, 4)
    assert len(net.segment_calls) == 1


def test_without_masks_only_the_detections_run():
    from maskplus.engine.tta import AugmentedPredictor
    net = FakeNetwork([(np.array([[20, 10, 40, 30]], np.float32), np.array([0.9], np.float32), np.array([1]))])
    out = AugmentedPredictor(net.detect, None, [View(60, False)], 1000.0, 0.5, 0.05, 100).run_image(
        np.zeros((H, W, 3), np.uint8))
    assert out.masks is None and len(out.boxes) == 1


# ------------------------------------------------------------------------ the tiny model
ALL_TECHNIQUES = {"MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.DECONV_PYRAMID": True,
                  "MASKPLUS.BOUNDARY_REFINEMENT": "improved", "MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"],
                  "MASKPLUS.BIASED_TRAINING": True}
C4 = {"MODE_FPN": False, "RPN.HEAD_DIM": 64, "RPN.TEST_PRE_NMS_TOPK": 200, "RPN.TEST_POST_NMS_TOPK": 50,
      "MASKPLUS.CONTEXT_FUSION": False}  # C4 has no FPN level to pool the context from
MODELS = {"fpn": ALL_TECHNIQUES, "c4": dict(ALL_TECHNIQUES, **C4), "cascade": dict(ALL_TECHNIQUES, **{"FPN.CASCADE": True})}


def _image(seed):
    """A 48 x 64 image: the test size (short edge 96, long edge <= 128) doubles it exactly, 72 is x1.5."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 255, (48, 64, 3)).astype(np.uint8)
    image[8:30, 5:25] = (30, 200, 90)
    image[20:44, 38:60] = (220, 40, 40)
    return image


@pytest.fixture(scope="module", params=sorted(MODELS))
def tiny_runs(request, tmp_path_factory):
    """The outputs of one random tiny model: without augmentation, with one view at the test size,
    and with two sizes and their mirrors on the image and on its mirror."""
    from maskplus.engine.inference import build_predictor, run_network
    from config import config as cfg
    from maskplus.engine.tta import AugmentationParams, AugmentedPredictor, augmented
    weights = str(tmp_path_factory.mktemp("tta") / "model.npz")
    image = _image(0)
    with config_snapshot():
        configure(dict(MODELS[request.param], **{"TEST.AUGMENT.ENABLED": True, "TEST.AUGMENT.FLIP": False,
                                                 "TEST.AUGMENT.SHORT_EDGE_SIZES": [96]}), training=False)
        write_random_model(weights, seed=1)
        predictor = build_predictor(weights)
        one_view = augmented(predictor, AugmentationParams.from_config(cfg))
        four_views = AugmentedPredictor(one_view.detect, one_view.segment, augmented_views([96, 72], flip=True),
                                        one_view.max_size, *one_view.merge_rules)
        runs = {"plain": run_network(predictor, image), "one_view": run_network(one_view, image),
                "views": four_views.views, "flip": run_network(four_views, image),
                "flip_of_mirror": run_network(four_views, np.ascontiguousarray(image[:, ::-1]))}
        # the mask branch on 7 given boxes (the test size doubles the image) with given labels
        view = np.ascontiguousarray(cv2.resize(image, (128, 96)), np.float32)
        boxes = runs["plain"].boxes[:7] * 2
        _, _, _, *features = one_view.detect(view)
        labels = np.array([3, 1, 2, 2, 1, 3, 1], np.int64)
        runs["given"] = {"labels": labels, "masks": one_view.segment(view, boxes, labels, *features)[0],
                         "one_label": [one_view.segment(view, boxes, np.full(7, k, np.int64), *features)[0]
                                       for k in (1, 2, 3)]}
        return runs


@pytest.mark.slow
def test_one_view_at_the_test_size_gives_the_detections_and_masks_of_no_augmentation(tiny_runs):
    plain, tta = tiny_runs["plain"], tiny_runs["one_view"]
    assert len(plain.boxes) >= 20 and plain.masks.shape[1:] in ((28, 28), (14, 14))
    np.testing.assert_array_equal(tta.labels, plain.labels)
    np.testing.assert_allclose(tta.scores, plain.scores, rtol=1e-6)
    np.testing.assert_allclose(tta.boxes, plain.boxes, atol=1e-4)
    np.testing.assert_allclose(tta.masks, plain.masks, atol=1e-5)


def _by_score(out, mirror_width=None):
    boxes, masks = out.boxes.copy(), out.masks.copy()
    if mirror_width is not None:
        boxes[:, [0, 2]] = mirror_width - boxes[:, [2, 0]]
        masks = masks[:, :, ::-1]
    order = np.lexsort((np.round(boxes[:, 0], 2), out.labels, -np.round(out.scores, 5)))
    return boxes[order], out.scores[order], out.labels[order], masks[order]


@pytest.mark.slow
def test_with_mirrored_views_the_mirrored_image_gets_the_mirrored_detections_and_masks(tiny_runs):
    """The views of the mirrored image are those of the image, mirrored pairwise: whatever a view
    found, mapped back to the image (mirror undone, scale divided out), must be the same."""
    assert tiny_runs["views"] == [View(96, False), View(96, True), View(72, False), View(72, True)]
    image_dets = _by_score(tiny_runs["flip"], mirror_width=64)
    mirror_dets = _by_score(tiny_runs["flip_of_mirror"])
    assert len(image_dets[0]) >= 20
    np.testing.assert_array_equal(mirror_dets[2], image_dets[2])
    np.testing.assert_allclose(mirror_dets[1], image_dets[1], rtol=1e-5)
    np.testing.assert_allclose(mirror_dets[0], image_dets[0], atol=1e-3)
    np.testing.assert_allclose(mirror_dets[3], image_dets[3], atol=1e-4)
    # the views changed the result: not the single view's detections
    plain = tiny_runs["plain"]
    assert len(plain.boxes) != len(tiny_runs["flip"].boxes) or not np.allclose(plain.boxes, tiny_runs["flip"].boxes)


@pytest.mark.slow
def test_the_mask_branch_runs_on_given_boxes_with_their_given_labels(tiny_runs):
    """Each given box's mask is the mask head's channel of its given label, whatever the model's
    own detections in that view (7 boxes, where the model keeps more)."""
    given = tiny_runs["given"]
    assert given["masks"].shape[0] == 7 and len(tiny_runs["plain"].boxes) > 7
    expected = np.stack([given["one_label"][label - 1][k] for k, label in enumerate(given["labels"])])
    np.testing.assert_allclose(given["masks"], expected, atol=1e-6)
    assert np.abs(given["one_label"][0] - given["one_label"][1]).max() > 1e-3  # the channels differ
