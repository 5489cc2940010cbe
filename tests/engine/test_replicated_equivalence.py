"""Two replicated towers x 1 image with accumulation to 8 make the same update as one tower
accumulating the same 8 images (README: gradients summed over towers, accumulated to 8 images).

Both runs start from the same weights (one ``--load`` file), read the same seeded data stream
(DATA.NUM_WORKERS=0, DATA.SEED), and keep every proposal as a sampled RoI (FRCNN.BATCH_PER_IM
above the proposal count), so no random op makes the two graphs differ: only the way gradients
are combined could. The 2-tower run consumes images 2k+1 and 2k+2 at its step k, so its first
4 steps see exactly the 8 images of the 1-tower run's first 8 steps.

Tolerance: two identical 1-tower runs differ by round-off that cancellation amplifies (the
gradient order of RoIAlign's scatter-add differs between runs): measured 6e-4 of the update's
norm overall and up to 0.6% on a GroupNorm gamma. Summing versus averaging is a factor 2.
"""
import os

import numpy as np
import pytest

from tests.helpers import build_graph, checkpoint_arrays, config_snapshot, configure
from maskplus.compat import tfv1
from maskplus.engine.callbacks import DUMP_VARIABLES_ENV
from tests.engine.test_training import stats, train

pytestmark = [pytest.mark.cli, pytest.mark.slow]  # both tests compare the models of two train.py runs

# every proposal (<= 64 per image, plus the gts) is kept: no random sampling
NO_SAMPLING = ["FRCNN.BATCH_PER_IM=256", "FRCNN.FG_RATIO=0.5", "RPN.TRAIN_PER_LEVEL_NMS_TOPK=64"]
CONSTANT_LR = ["TRAIN.BASE_LR=0.02", "TRAIN.WARMUP=1", "TRAIN.WARMUP_INIT_LR=0.02"]


def _initial_npz(path):
    """Random initial weights of the model train.py builds on the tiny dataset (classes cat, dog)."""
    from maskplus.engine.checkpoint import export_npz
    with config_snapshot():
        configure({"FPN.FRCNN_FC_HEAD_DIM": 64}, class_names=("cat", "dog"), training=False)
        graph, _, _ = build_graph(False)
        with graph.as_default(), tfv1.Session() as sess:
            tfv1.set_random_seed(5)
            sess.run(tfv1.global_variables_initializer())
            export_npz(sess, path)
    with np.load(path) as f:
        return {k[:-2] if k.endswith(":0") else k: f[k] for k in f.files}


def _update_error(init, one, two, names):
    """||update_two - update_one|| / ||update_one|| over the given variables."""
    d1 = np.concatenate([(one[n] - init[n]).ravel() for n in names])
    d2 = np.concatenate([(two[n] - init[n]).ravel() for n in names])
    return float(np.linalg.norm(d2 - d1) / np.linalg.norm(d1))


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicated")
    init = _initial_npz(str(root / "init.npz"))
    common = NO_SAMPLING + CONSTANT_LR + ["TRAIN.GRADIENT_ACCUMULATION=True", "TRAIN.CHECKPOINT_PERIOD=1",
                                          "TRAIN.LR_SCHEDULE=[1,1,1]"]
    # one batch-8 step: 8 accumulated steps of 1 tower, 4 of 2 towers; one update each
    train(dataset, root / "one", *common, "TRAIN.NUM_GPUS=1", "TRAIN.STEPS_PER_EPOCH=8",
          extra=["--load", str(root / "init.npz")])
    os.environ[DUMP_VARIABLES_ENV] = str(root / "dump")  # every variable, tower 1's copies included
    try:
        proc = train(dataset, root / "two", *common, "TRAIN.NUM_GPUS=2", "TRAIN.STEPS_PER_EPOCH=4",
                     extra=["--load", str(root / "init.npz")])
    finally:
        del os.environ[DUMP_VARIABLES_ENV]
    assert "Training a model of 2 towers" in proc.stdout + proc.stderr
    assert stats(root / "two")[-1]["global_step"] == 4  # 1 batch-8 step = 4 steps of 2 images
    with np.load(root / "dump" / "variables-rank0.npz") as f:
        dumped = {k: f[k] for k in f.files}
    return init, checkpoint_arrays(root / "one" / "model-8"), checkpoint_arrays(root / "two" / "model-4"), dumped


def test_the_first_update_of_two_towers_equals_one_tower_accumulating_the_same_images(runs):
    init, one, two, _ = runs
    assert set(init) <= set(one) and set(init) <= set(two)
    moved = [n for n in init if np.any(one[n] != init[n])]
    assert len(moved) > 0.75 * len(init), (len(moved), len(init))  # P4-P6 paths get no gradient on 64-px images
    for name in set(init) - set(moved):  # e.g. a GroupNorm no loss reaches in one update
        assert np.array_equal(two[name], init[name]), name
    assert _update_error(init, one, two, moved) < 5e-3
    per_variable = {n: _update_error(init, one, two, [n]) for n in moved}
    assert max(per_variable.values()) < 3e-2, sorted(per_variable.items(), key=lambda kv: -kv[1])[:5]


def test_the_two_tower_copies_hold_equal_weights_after_training(runs):
    init, _, two, dumped = runs
    missing = [n for n in init if f"tower1/{n}" not in dumped or n not in dumped]
    assert missing == []
    for name in init:
        np.testing.assert_array_equal(dumped[name], two[name], err_msg=name)  # the dump is the checkpoint's state
        np.testing.assert_allclose(dumped[f"tower1/{name}"], dumped[name], rtol=0, atol=1e-6, err_msg=name)
