"""The rest of the Mask R-CNN family through the command-line tools: a tiny ResNet-C4 and a tiny
Cascade R-CNN each train a few steps with train.py (finite losses), continue on a longer schedule
in a second train.py run started from the checkpoint (--load, every variable restored), are evaluated with COCO AP by predict.py --evaluate (bbox and segm
results), and are exported by predict.py --export-serving to a SavedModel that plain TensorFlow
runs with the in-process predictor's results. One trained log directory per model is shared by
the tests (module fixtures); the whole file took 194 s on the 2-core AMD EPYC while other jobs
shared it (a train.py run alone: 28 s, of which 9 s graph building and 11 s the first two steps)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import write_tiny_coco
from tests.helpers import config_snapshot
from tests.engine.test_training import ROOT, TINY_ARGS, stats, train

pytestmark = pytest.mark.slow  # every test uses a trained model (a train.py run per family)

#: Each model's overrides on top of test_training's tiny FPN config. C4: a 64-wide RPN, few
#: proposals and 16 sampled RoIs (res5 runs on every RoI at 2048 channels, the costly part).
MODELS = {
    "c4": ["MODE_FPN=False", "RPN.HEAD_DIM=64", "RPN.TRAIN_PRE_NMS_TOPK=300", "RPN.TRAIN_POST_NMS_TOPK=100",
           "RPN.TEST_PRE_NMS_TOPK=200", "RPN.TEST_POST_NMS_TOPK=50", "FRCNN.BATCH_PER_IM=16"],
    "cascade": ["FPN.CASCADE=True"],
}
#: Real steps = batch-8 steps x 8 (one tower); epochs of 2 steps, a checkpoint after each. The
#: first run ends at step 4, the second (a longer schedule: another run, in its own log directory)
#: continues from its checkpoint to step 6.
SCHEDULE = ["TRAIN.NUM_GPUS=1", "TRAIN.GRADIENT_ACCUMULATION=False", "TRAIN.STEPS_PER_EPOCH=2",
            "TRAIN.CHECKPOINT_PERIOD=1", "TRAIN.WARMUP=2"]
FIRST, SECOND = "TRAIN.LR_SCHEDULE=[0.5,0.5,0.5]", "TRAIN.LR_SCHEDULE=[0.5,0.5,0.75]"
#: Inference: every detection above 0.001 (a 6-step model is unsure of everything), images kept
#: at their size when their short edge is 64 (so the exported graph's resize is the identity).
PREDICT_ARGS = [a for a in TINY_ARGS if not a.startswith("DATA.SEED")] + ["TEST.RESULT_SCORE_THRESH=0.001"]
#: The losses each model must log (stats.json keys), besides the total cost.
LOSSES = {
    "c4": ["rpn_losses/label_loss", "rpn_losses/box_loss", "fastrcnn_losses/label_loss",
           "fastrcnn_losses/box_loss", "maskrcnn_loss/maskrcnn_loss"],
    "cascade": ["rpn_losses/label_loss", "maskrcnn_loss/maskrcnn_loss"]
    + [f"cascade_loss_stage{k}/fastrcnn_losses/{n}" for k in (1, 2, 3) for n in ("label_loss", "box_loss")],
}

PLAIN_TF = r'''
import sys, numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
image = np.load(sys.argv[1])
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], sys.argv[2])
    sig = meta.signature_def["serving_default"]
    out = sess.run({k: sig.outputs[k].name for k in sig.outputs}, {sig.inputs["image"].name: image})
assert "tensorpack" not in sys.modules and "maskplus" not in sys.modules
np.savez(sys.argv[3], **out)
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The tiny COCO set without its two deliberately unusable annotations (COCO's segm
    evaluation cannot rasterise the two-point polygon)."""
    root = str(tmp_path_factory.mktemp("coco"))
    json_path, _ = write_tiny_coco(root)
    with open(json_path) as f:
        data = json.load(f)
    data["annotations"] = [a for a in data["annotations"] if a["id"] not in (4, 6)]
    with open(json_path, "w") as f:
        json.dump(data, f)
    return root


@pytest.fixture(scope="module", params=sorted(MODELS))
def trained(request, dataset, tmp_path_factory):
    """(model name, the second run's log directory, the two train.py outputs, stats.json entries of
    the first run)."""
    name = request.param
    first_logdir = tmp_path_factory.mktemp(f"train-{name}")
    first = train(dataset, first_logdir, *MODELS[name], *SCHEDULE, FIRST)
    first_stats = stats(first_logdir)
    logdir = tmp_path_factory.mktemp(f"longer-{name}")
    second = train(dataset, logdir, *MODELS[name], *SCHEDULE, SECOND, extra=["--load", str(first_logdir / "model-4")])
    return name, str(logdir), first.stdout + first.stderr, second.stdout + second.stderr, first_stats


def _image():
    """A 64 x 96 BGR image with two filled shapes: already at the test size (short edge 64)."""
    rng = np.random.RandomState(0)
    image = rng.randint(40, 120, (64, 96, 3)).astype(np.uint8)
    image[10:40, 15:50] = (30, 200, 60)
    image[30:60, 55:90] = (200, 40, 40)
    return image


@pytest.fixture(scope="module")
def predicted(trained, dataset, tmp_path_factory):
    """One predict.py run on the trained model: --evaluate and --export-serving."""
    name, logdir = trained[:2]
    out = tmp_path_factory.mktemp(f"predict-{name}")
    results = str(out / "eval" / "results.json")
    saved = str(out / "saved_model")
    cmd = [sys.executable, os.path.join(ROOT, "predict.py"), "--evaluate", results, "--export-serving", saved,
           "--load", logdir, "--config", f"DATA.BASEDIR={dataset}", *PREDICT_ARGS, *MODELS[name]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return name, logdir, results, saved, out


def test_trains_with_finite_losses_then_continues_from_its_checkpoint_to_the_end_of_a_longer_schedule(trained):
    name, logdir, first_out, second_out, first = trained
    assert [e["global_step"] for e in first] == [2, 4]
    assert "Weights: --load" in second_out and "Start training with global_step=4" in second_out
    # every variable of the graph, optimizer state included, came from the checkpoint
    assert "Loaded " in second_out and "are not in the file" not in second_out and "another shape" not in second_out
    second = stats(logdir)
    assert [e["global_step"] for e in second] == [6]
    for entry in first + second:
        missing = [k for k in LOSSES[name] + ["total_cost"] if k not in entry]
        assert missing == [], (missing, sorted(entry))
        assert all(math.isfinite(entry[k]) for k in LOSSES[name] + ["total_cost"]), entry
    assert sorted(int(f[len("model-"):-len(".index")]) for f in os.listdir(logdir)
                  if f.startswith("model-") and f.endswith(".index"))[-1] == 6


def test_evaluate_writes_bbox_and_segm_results_and_coco_ap(predicted):
    _, _, results_path, _, _ = predicted
    with open(results_path) as f:
        results = json.load(f)
    assert results and all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(r) for r in results)
    assert {r["image_id"] for r in results} == {1, 2, 3}
    with open(results_path.replace(".json", "-metrics.json")) as f:
        metrics = json.load(f)["metrics"]
    for kind in ("bbox", "segm"):
        for m in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            value = metrics[f"{kind}/{m}"]
            assert value is None or 0.0 <= value <= 1.0, (kind, m, value)
        # COCO's -1 (stored as None) exactly where the dataset has no ground truth: no large object
        # (areas 200, 450 and 1200 px, all below 96^2), small and medium ones present
        assert metrics[f"{kind}/APl"] is None
        assert all(isinstance(metrics[f"{kind}/{m}"], float) for m in ("AP", "AP50", "AP75", "APs", "APm"))


def test_the_saved_model_run_by_plain_tensorflow_gives_the_predictors_results(predicted, dataset):
    from config import config as cfg
    from maskplus.cli import finalize
    from maskplus.engine.inference import build_predictor, run_network
    name, logdir, _, saved, out = predicted
    image = _image()
    with config_snapshot():
        cfg.update_args([f"DATA.BASEDIR={dataset}", *PREDICT_ARGS, *MODELS[name]])
        finalize(is_training=False)
        expected = run_network(build_predictor(logdir), image)
    np.save(out / "image.npy", image)
    script = out / "plain_tf.py"
    script.write_text(PLAIN_TF)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(script), str(out / "image.npy"), saved, str(out / "got.npz")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out / "got.npz")
    assert len(expected.boxes) > 0
    assert expected.masks.shape[1:] == ((14, 14) if name == "c4" else (28, 28))
    np.testing.assert_allclose(got["boxes"], expected.boxes, atol=1e-3)
    np.testing.assert_allclose(got["scores"], expected.scores, atol=1e-5)
    np.testing.assert_array_equal(got["labels"], expected.labels)
    np.testing.assert_allclose(got["masks"], expected.masks, atol=1e-4)
