"""predict.py's input and output files, in-process with a stand-in predictor: a failing prediction
(MemoryError, cv2.error) is reported and skipped and the batch goes on; output names never
coincide with an input, hard links included."""
import os

import cv2
import numpy as np

import predict


def _image(path, h, w):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, np.full((h, w, 3), 120, np.uint8))
    return path


class FailingOn:
    """A predictor that finds nothing, except on images of the given widths (after resizing
    nothing: the test images are small) where it raises."""

    def __init__(self, errors_by_width):
        self.errors_by_width = errors_by_width

    def __call__(self, image):
        error = self.errors_by_width.get(image.shape[1])
        if error is not None:
            raise error
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, 28, 28))


def test_a_memory_error_or_an_opencv_error_skips_that_image_and_the_batch_goes_on(tmp_path, cfg_override, capsys):
    cfg_override({"MODE_MASK": True, "PREPROC.TEST_SHORT_EDGE_SIZE": 800, "PREPROC.MAX_SIZE": 1333.0,
                  "DATA.CLASS_NAMES": ["BG", "a"]})
    paths = [_image(str(tmp_path / f"{k}.png"), 40, 50 + k) for k in range(4)]
    predictor = FailingOn({51 * 20: MemoryError("cannot allocate 4.8 GB"),
                           52 * 20: cv2.error("OpenCV(5.1.0) resize.cpp:3590: error: (-215:Assertion failed)")})
    out = str(tmp_path / "out")
    images = [(p, os.path.splitext(os.path.basename(p))[0]) for p in paths]
    failures = []
    written = predict.predict_files(predictor, images, predict.output_paths(images, out), failures)
    err = capsys.readouterr().err
    assert written == 2 and sorted(os.listdir(out)) == ["0.png", "3.png"]
    assert [p for p, _ in failures] == [paths[1], paths[2]]
    assert f"Skipping '{paths[1]}': prediction failed: MemoryError: cannot allocate 4.8 GB" in err
    assert f"Skipping '{paths[2]}': prediction failed: cv2.error: OpenCV(5.1.0) resize.cpp:3590" in err


def test_output_names_avoid_every_input_and_each_other(tmp_path):
    out = str(tmp_path / "out")
    photo = _image(os.path.join(out, "photo.png"), 10, 10)
    linked = os.path.join(out, "linked.png")
    source = _image(str(tmp_path / "elsewhere" / "source.png"), 10, 10)
    os.link(source, linked)  # the drawing of 'source' would be written through the link
    a, b = _image(str(tmp_path / "a" / "x.jpg"), 10, 10), _image(str(tmp_path / "b" / "x.jpg"), 10, 10)
    images = [(photo, "photo"), (source, "linked"), (a, "x"), (b, "x"), (a, "x-2")]
    names = [os.path.relpath(p, out) for p in predict.output_paths(images, out)]
    assert names == ["photo-2.png", "linked-2.png", "x.png", "x-2.png", "x-2-2.png"]


def test_a_folder_means_its_images_recursively_without_the_output_folder(tmp_path, capsys):
    root = str(tmp_path / "photos")
    for rel in ("b.jpg", "A.JPG", os.path.join("sub", "c.png"), os.path.join("predictions", "old.png")):
        _image(os.path.join(root, rel), 8, 8)
    open(os.path.join(root, "notes.txt"), "w").write("x")
    os.makedirs(os.path.join(root, "empty"))
    images, problems = predict.find_images([root, os.path.join(root, "empty"), str(tmp_path / "nope")],
                                           os.path.join(root, "predictions"))
    assert [(os.path.relpath(p, root), name) for p, name in images] == [
        ("A.JPG", "A"), ("b.jpg", "b"), (os.path.join("sub", "c.png"), os.path.join("sub", "c"))]
    assert [os.path.basename(a) for a, _ in problems] == ["empty", "nope"]
    assert problems[1][1] == "the file does not exist"
    assert f"Not looking in '{os.path.join(root, 'predictions')}': it is the output folder." in capsys.readouterr().err
    # the output folder itself, named as input, is looked in
    inside, _ = predict.find_images([os.path.join(root, "predictions")], os.path.join(root, "predictions"))
    assert [name for _, name in inside] == ["old"]
