"""Loading weights: reports, clear errors, fine-tuning loads that skip mismatches, exports."""
import numpy as np
import pytest

from tests.helpers import build_graph, config_snapshot, configure, restore_into_tiny_graph, variable_shapes
from maskplus.compat import tfv1
from maskplus.engine.checkpoint import CheckpointError, CheckpointInit, export_npz, read_checkpoint


def _random_npz(path, shapes, seed=0, drop=(), extra=None):
    rng = np.random.RandomState(seed)
    arrays = {k + ":0": rng.standard_normal(v).astype(np.float32) for k, v in shapes.items() if k not in drop}
    arrays.update(extra or {})
    np.savez(path, **arrays)
    return arrays


def _load(path, ignore_mismatch=False, init=None):
    used, values = restore_into_tiny_graph(lambda: init or CheckpointInit(path, ignore_mismatch=ignore_mismatch))
    return used.report, values


@pytest.fixture
def tiny_shapes():
    with config_snapshot():
        configure({}, training=False)
        yield variable_shapes(build_graph(False)[0])


def test_report_lists_fresh_and_unused_variables(tmp_path, tiny_shapes):
    path = str(tmp_path / "m.npz")
    # as Tensorpack: a value of another shape but the variable's number of elements is reshaped
    shape = tiny_shapes["fpn/posthoc_3x3_p3/W"]
    flat = np.random.RandomState(1).standard_normal(int(np.prod(shape))).astype(np.float32)
    _random_npz(path, tiny_shapes, drop=("maskrcnn/conv/W", "maskrcnn/conv/b"),
                extra={"some/old/var:0": np.zeros(3, np.float32), "fpn/posthoc_3x3_p3/W:0": flat})
    with config_snapshot():
        configure({}, training=False)
        report, values = _load(path)
    assert report.missing == ["maskrcnn/conv/W", "maskrcnn/conv/b"]
    assert report.unused == ["some/old/var"] and report.skipped == []
    assert len(report.restored) == len(tiny_shapes) - 2
    np.testing.assert_array_equal(values["fpn/posthoc_3x3_p3/W"], flat.reshape(shape))
    assert "2 graph variables are not in the file" in str(report) and "maskrcnn/conv/W" in str(report)


def test_shape_mismatch_names_the_variable_and_both_shapes(tmp_path, tiny_shapes):
    path = str(tmp_path / "m.npz")
    _random_npz(path, tiny_shapes, extra={"fpn/lateral_1x1_c2/b:0": np.zeros(7, np.float32)})
    with config_snapshot(), pytest.raises(CheckpointError, match=r"fpn/lateral_1x1_c2/b: file \[7\] vs graph \[64\]"):
        configure({}, training=False)
        _load(path)


_CLASS_DEPENDENT_80 = {"maskrcnn/conv/W": [1, 1, 64, 80], "maskrcnn/conv/b": [80],
                       "fastrcnn/outputs/class/W": [64, 81], "fastrcnn/outputs/class/b": [81],
                       "fastrcnn/outputs/box/W": [64, 324], "fastrcnn/outputs/box/b": [324]}


def test_a_checkpoint_for_other_classes_fails_a_strict_load_and_names_the_fine_tuning_load(tmp_path, tiny_shapes):
    path = str(tmp_path / "coco.npz")
    _random_npz(path, dict(tiny_shapes, **_CLASS_DEPENDENT_80))
    with config_snapshot():
        configure({}, training=False)
        with pytest.raises(CheckpointError, match=r"different number of classes \(the file predicts 80 categories, "
                                                   r"this model 3\).*--load"):
            _load(path)


def test_fine_tuning_load_skips_and_reports_the_class_dependent_variables(tmp_path, tiny_shapes):
    # as the example's SmartInit(..., ignore_mismatch=True): a COCO model fine-tuned on 3 classes
    path = str(tmp_path / "coco.npz")
    arrays = _random_npz(path, dict(tiny_shapes, **_CLASS_DEPENDENT_80))
    with config_snapshot():
        configure({}, training=False)
        report, values = _load(path, ignore_mismatch=True)
    skipped = {name: (list(got), list(want)) for name, got, want in report.skipped}
    assert skipped == {"maskrcnn/conv/W": ([1, 1, 64, 80], [1, 1, 64, 3]), "maskrcnn/conv/b": ([80], [3]),
                       "fastrcnn/outputs/class/W": ([64, 81], [64, 4]), "fastrcnn/outputs/class/b": ([81], [4]),
                       "fastrcnn/outputs/box/W": ([64, 324], [64, 16]), "fastrcnn/outputs/box/b": ([324], [16])}
    assert len(report.restored) == len(tiny_shapes) - 6 and not report.missing and not report.unused
    assert "6 variables have another shape in the file" in str(report)
    assert "fastrcnn/outputs/class/W: file [64, 81] vs graph [64, 4]" in str(report)
    np.testing.assert_array_equal(values["group3/block0/conv3/W"], arrays["group3/block0/conv3/W:0"])
    np.testing.assert_array_equal(values["fastrcnn/fc7/W"], arrays["fastrcnn/fc7/W:0"])
    # the skipped ones keep their fresh initialisation (bias zeros, not the file's random values)
    np.testing.assert_array_equal(values["fastrcnn/outputs/class/b"], np.zeros(4, np.float32))


def test_trainer_loads_follow_the_example(tmp_path, tiny_shapes, cfg_override):
    """--load skips mismatches; BACKBONE.WEIGHTS restores every name the graph has (FPN, RPN and
    heads too, not only the backbone) and fails on a mismatch; resuming a log directory is strict."""
    from maskplus.engine.trainer import initial_weights
    full = str(tmp_path / "full.npz")
    arrays = _random_npz(full, tiny_shapes)
    with config_snapshot():
        configure({"BACKBONE.WEIGHTS": full}, training=False)
        init, step = initial_weights(None, str(tmp_path / "empty_logdir"))
        assert step == 0 and not init.ignore_mismatch
        report, values = _load(full, init=init)
    assert len(report.restored) == len(tiny_shapes)
    for name in ("fpn/posthoc_3x3_p2/W", "rpn/conv0/W", "fastrcnn/fc6/W", "maskrcnn/fcn0/W", "group0/block0/conv1/W"):
        np.testing.assert_array_equal(values[name], arrays[name + ":0"])
    with config_snapshot():
        configure({}, training=False)
        init, _ = initial_weights(full, None)
        assert init.ignore_mismatch and init.path == full


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"this is not a zip", "is not a readable .npz weights file"),
])
def test_missing_or_corrupt_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "weights.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(str(path))


def test_a_directory_without_a_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="holds no TensorFlow checkpoint"):
        read_checkpoint(str(tmp_path))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="neither a .npz file nor a TensorFlow checkpoint"):
        read_checkpoint(str(tmp_path / "notes.txt"))


def test_a_model_file_holds_no_training_state(tmp_path):
    """The model's own optimiser (momentum, accumulation) creates its slots, counter, step and
    learning rate; a model file (as the model zoo's) holds the weights and BN statistics only."""
    from tensorpack.tfutils.common import get_global_step_var
    from maskplus.compat import tf
    from maskplus.engine.model import model_params
    from maskplus.modeling.generalized_rcnn import ResNetFPNModel
    with config_snapshot():
        configure({"TRAIN.NUM_GPUS": 1, "TRAIN.GRADIENT_ACCUMULATION": True, "MASKPLUS.BIASED_TRAINING": True})
        with tf.Graph().as_default(), tfv1.Session() as sess:
            w = tfv1.get_variable("head/W", initializer=tf.ones([3]))
            tfv1.get_variable("head/bn/mean/EMA", initializer=tf.zeros([3]), trainable=False)
            from maskplus.techniques.biased_training import mask_loss_alpha
            loss = tf.reduce_sum(w * w) * mask_loss_alpha(1.5)
            ResNetFPNModel(model_params()).optimizer().minimize(loss, global_step=get_global_step_var())
            names = {v.op.name for v in tfv1.global_variables()}
            assert {"head/W/Momentum", "head/W/AccumGrad", "AccumGrad/counter", "global_step", "learning_rate",
                    "mask_loss_alpha"} <= names, names  # the training state is there
            sess.run(tfv1.global_variables_initializer())
            export_npz(sess, str(tmp_path / "m.npz"))
    assert sorted(read_checkpoint(str(tmp_path / "m.npz"))) == ["head/W", "head/bn/mean/EMA"]


@pytest.mark.slow
def test_export_then_load_round_trips_every_model_variable(tmp_path):
    path = str(tmp_path / "exported.npz")
    with config_snapshot():
        configure({"MASKPLUS.BOUNDARY_REFINEMENT": "improved"}, training=False)
        graph, _, _ = build_graph(False)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            n = export_npz(sess, path)
            expected = {v.op.name: sess.run(v) for v in tfv1.global_variables()}
        report, values = _load(path)
    stored = read_checkpoint(path)
    assert n == len(stored) and not report.missing and not report.unused
    assert "boundary_refinement/module0/bn0/mean/EMA" in stored  # BN statistics are exported
    assert all(k.endswith(":0") for k in np.load(path).files)  # model-zoo key style
    for name, value in stored.items():
        np.testing.assert_array_equal(value, expected[name])


def test_a_load_restores_every_variable_in_one_session_run(tmp_path, tiny_shapes):
    # a run per variable prunes the whole graph each time: resuming R50-FPN's 678 variables that
    # way took 116 s (BENCHMARKS.md)
    arrays = _random_npz(tmp_path / "m.npz", tiny_shapes, seed=3)
    graph, _, _ = build_graph(False)
    with graph.as_default(), tfv1.Session() as sess:
        init = CheckpointInit(str(tmp_path / "m.npz"))
        init._setup_graph()
        sess.run(tfv1.global_variables_initializer())
        runs = []

        class CountingSession:
            def run(self, *args, **kwargs):
                runs.append(args)
                return sess.run(*args, **kwargs)

        init._run_init(CountingSession())
        values = {v.op.name: sess.run(v) for v in tfv1.global_variables()}
    assert len(runs) == 1 and len(tiny_shapes) > 100
    for name in tiny_shapes:
        np.testing.assert_array_equal(values[name], arrays[name + ":0"], err_msg=name)


def test_a_long_report_shows_ten_names_per_category_and_logs_all_of_them(tmp_path):
    from tensorpack.utils import logger
    from maskplus.engine.checkpoint import LoadReport
    missing = [f"head/v{i:02d}" for i in range(25)]
    unused = [f"old/v{i}" for i in range(3)]
    report = LoadReport("m.npz", ["a", "b"], missing, unused)
    short = str(report).splitlines()
    assert short[0] == "Loaded 2 variables from 'm.npz'."
    assert short[1].startswith("25 graph variables are not in the file")
    assert short[2:12] == [f"    head/v{i:02d}" for i in range(10)] and short[12] == "    ... and 15 more"
    assert short[13].startswith("3 file entries are not used") and short[14:] == [f"    old/v{i}" for i in range(3)]
    assert all(f"    {n}" in report.text().splitlines() for n in missing + unused)
    logger.set_logger_dir(str(tmp_path), action="k")
    try:
        report.log()
    finally:
        logger.set_logger_dir(str(tmp_path / "unused"), action="k")
    full = (tmp_path / "load_report.txt").read_text()
    assert all(f"    {n}\n" in full for n in missing + unused)
    logged = (tmp_path / "log.log").read_text()
    assert f"... and 15 more (all in {tmp_path / 'load_report.txt'})" in logged and "head/v24" not in logged
