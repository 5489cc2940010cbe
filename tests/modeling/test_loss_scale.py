"""Dynamic loss scaling (maskplus/modeling/loss_scale.py), on the CPU in float32: the scaling logic
does not depend on the precision the gradients were computed in.

Expected values by hand: for loss = sum(c * w) the gradient is c whatever w is, so the momentum
update is accum <- 0.9 accum + c, w <- w - lr accum (TensorFlow's MomentumOptimizer); a step whose
gradients are not finite changes nothing but the scale (halved) and the good-step count (reset).
"""
import numpy as np
import pytest

from maskplus.compat import tf, tfv1
from maskplus.modeling.accumulation import AccumulatingOptimizer
from maskplus.modeling.loss_scale import LossScalingOptimizer

LR, MOMENTUM = 0.25, 0.9
W0 = np.array([0.5, -1.25, 2.0], np.float32)
C = np.array([0.75, -0.3, 1.7], np.float32)
BAD = np.array([0.75, np.inf, 1.7], np.float32)


def _momentum_by_hand(grads):
    """w after plain momentum steps with these gradients (None: a skipped step)."""
    w, accum = W0.copy(), np.zeros_like(W0)
    for g in grads:
        if g is not None:
            accum = np.float32(MOMENTUM) * accum + g
            w = w - np.float32(LR) * accum
    return w


class Setup:
    """A graph with w, loss = sum(c * w) for a fed c, and ``wrap(MomentumOptimizer)``'s step."""

    def __init__(self, wrap, **loss_scale_args):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.c = tfv1.placeholder(tf.float32, [3])
            self.w = tfv1.get_variable("w", initializer=W0)
            loss = tf.reduce_sum(self.c * self.w)
            self.loss_scale = LossScalingOptimizer(tfv1.train.MomentumOptimizer(LR, MOMENTUM), **loss_scale_args)
            self.step = wrap(self.loss_scale).minimize(loss)
            self.sess = tfv1.Session()
            self.sess.run(tfv1.global_variables_initializer())

    def run(self, c):
        self.sess.run(self.step, {self.c: c})
        return self.state()

    def state(self):
        w, scale, good = self.sess.run([self.w, self.loss_scale.scale, self.loss_scale.good_steps])
        return w, float(scale), int(good)


def test_a_finite_step_is_exactly_the_plain_momentum_update():
    setup = Setup(lambda opt: opt, initial_scale=2.0 ** 15)
    for k in range(1, 4):
        w, scale, good = setup.run(C)
        np.testing.assert_allclose(w, _momentum_by_hand([C] * k), rtol=1e-6)
        assert (scale, good) == (2.0 ** 15, k)


def test_a_non_finite_gradient_skips_the_update_and_halves_the_scale():
    setup = Setup(lambda opt: opt, initial_scale=1024.0)
    setup.run(C)
    w, scale, good = setup.run(BAD)
    np.testing.assert_allclose(w, _momentum_by_hand([C, None]), rtol=1e-6)  # nothing moved
    assert (scale, good) == (512.0, 0)
    # the momentum slot did not take the inf in either: the next steps are the plain ones
    w, _, _ = setup.run(C)
    np.testing.assert_allclose(w, _momentum_by_hand([C, None, C]), rtol=1e-6)
    assert np.isfinite(setup.sess.run(setup.loss_scale.get_slot(setup.w, "momentum"))).all()


def test_the_scale_doubles_after_n_good_steps_and_never_falls_below_its_minimum():
    setup = Setup(lambda opt: opt, initial_scale=4.0, growth_interval=3, min_scale=1.0)
    assert [setup.run(C)[1:] for _ in range(4)] == [(4.0, 1), (4.0, 2), (8.0, 0), (8.0, 1)]
    assert [setup.run(BAD)[1:] for _ in range(5)] == [(4.0, 0), (2.0, 0), (1.0, 0), (1.0, 0), (1.0, 0)]
    np.testing.assert_allclose(setup.state()[0], _momentum_by_hand([C] * 4), rtol=1e-6)


def test_with_accumulation_a_batch_with_a_non_finite_part_is_skipped_as_a_whole():
    setup = Setup(lambda opt: AccumulatingOptimizer(opt, 2), initial_scale=64.0)
    w, scale, good = setup.run(C)
    assert (scale, good) == (64.0, 0)  # between the parts of a batch nothing changes
    w, scale, good = setup.run(BAD)
    np.testing.assert_allclose(w, W0)
    assert (scale, good) == (32.0, 0)  # halved once for the batch
    # the sums were reset: the next batch applies exactly its own two parts
    setup.run(C)
    w, scale, good = setup.run(C)
    np.testing.assert_allclose(w, _momentum_by_hand([2 * C]), rtol=1e-6)
    assert (scale, good) == (32.0, 1)


def test_replicated_towers_skip_together_and_update_the_scale_once_per_step():
    """As Tensorpack's replicated trainer: each tower computes its gradients (scaled by the one
    shared scale), the sums are all-reduced and every tower applies them to its own copy."""
    graph = tf.Graph()
    with graph.as_default():
        c = [tfv1.placeholder(tf.float32, [3]) for _ in range(2)]
        w = [tfv1.get_variable(f"tower{k}_w", initializer=W0) for k in range(2)]
        opt = LossScalingOptimizer(tfv1.train.MomentumOptimizer(LR, MOMENTUM), initial_scale=16.0,
                                   growth_interval=2)
        grads = [opt.compute_gradients(tf.reduce_sum(c[k] * w[k]), var_list=[w[k]])[0][0] for k in range(2)]
        summed = tf.add_n(grads)
        step = tf.group(*[opt.apply_gradients([(summed, w[k])]) for k in range(2)])
        # one update of the scale (its grow and shrink branches), not one per tower: two would race
        writes = [op.name for op in graph.get_operations()
                  if op.type == "Assign" and "update_loss_scale" in op.name and op.inputs[0].dtype.base_dtype == tf.float32]
        assert len(writes) == 2, writes
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())

            def run(c0, c1):
                sess.run(step, {c[0]: c0, c[1]: c1})
                return sess.run(w) + [float(sess.run(opt.scale)), int(sess.run(opt.good_steps))]

            w0, w1, scale, good = run(C, 2 * C)
            np.testing.assert_allclose(w0, _momentum_by_hand([3 * C]), rtol=1e-6)
            np.testing.assert_allclose(w1, w0)
            assert (scale, good) == (16.0, 1)  # counted once, not once per tower
            w0, w1, scale, good = run(C, BAD)  # one tower's overflow: both skip
            np.testing.assert_allclose(w0, _momentum_by_hand([3 * C]), rtol=1e-6)
            np.testing.assert_allclose(w1, w0)
            assert (scale, good) == (8.0, 0)  # halved once
            run(C, C)
            assert run(C, C)[2:] == [16.0, 0]  # doubled once after two good steps


def test_the_loss_scale_state_resumes_from_a_checkpoint_and_stays_out_of_model_files(tmp_path):
    from maskplus.engine.checkpoint import CheckpointInit, model_variables, save_npz
    setup = Setup(lambda opt: opt, initial_scale=256.0, growth_interval=5)
    setup.run(BAD)
    setup.run(C)
    setup.run(C)  # scale 128, two good steps
    with setup.graph.as_default():
        assert {"LossScale/scale", "LossScale/good_steps"} <= {v.op.name for v in tfv1.global_variables()}
        assert not any(name.startswith("LossScale") for name in model_variables())  # not in .npz files
        prefix = tfv1.train.Saver().save(setup.sess, str(tmp_path / "model"))
        save_npz(str(tmp_path / "model.npz"), setup.sess.run(model_variables()))
    resumed = Setup(lambda opt: opt, initial_scale=256.0, growth_interval=5)
    with resumed.graph.as_default():
        init = CheckpointInit(prefix)
        init._setup_graph()
        init._run_init(resumed.sess)
        assert init.report.missing == []
    assert resumed.state()[1:] == (128.0, 2)
    assert resumed.run(C)[1:] == (128.0, 3)
    # a model file (as from a float32 run) leaves them fresh, and the load report says so
    fresh = Setup(lambda opt: opt, initial_scale=256.0)
    with fresh.graph.as_default():
        init = CheckpointInit(str(tmp_path / "model.npz"))
        init._setup_graph()
        init._run_init(fresh.sess)
    assert {"LossScale/scale", "LossScale/good_steps"} <= set(init.report.missing)
    assert "LossScale/scale" in init.report.text()
    assert fresh.state()[1:] == (256.0, 0)


def test_under_emulated_float16_rounding_an_overflowing_scale_falls_until_the_gradients_fit():
    """TensorFlow's ``auto_mixed_precision_cpu`` rewrite rounds MatMul inputs and outputs to
    float16 on the CPU. The weight gradient here is 10 per element: scaled by 2^15, 2^14 or 2^13
    it exceeds float16's 65504 (inf), at 2^12 (40960) it fits. So three skipped steps, then the
    plain update."""
    from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant(np.full([1, 4], 10.0, np.float32))
        w = tfv1.get_variable("w", initializer=np.full([4, 1], 0.5, np.float32))
        loss = tf.reduce_sum(tf.matmul(x, w))
        opt = LossScalingOptimizer(tfv1.train.GradientDescentOptimizer(0.001))
        step = opt.minimize(loss)
        conf = tfv1.ConfigProto()
        conf.graph_options.rewrite_options.auto_mixed_precision_cpu = RewriterConfig.ON
        with tfv1.Session(config=conf) as sess:
            sess.run(tfv1.global_variables_initializer())
            history = []
            for _ in range(5):
                sess.run(step)
                history.append((float(sess.run(opt.scale)), float(sess.run(w)[0, 0])))
    assert [s for s, _ in history] == [2.0 ** 14, 2.0 ** 13, 2.0 ** 12, 2.0 ** 12, 2.0 ** 12]
    assert [v for _, v in history[:3]] == [0.5, 0.5, 0.5]
    assert history[3][1] == pytest.approx(0.5 - 0.001 * 10, rel=1e-3)
    assert history[4][1] == pytest.approx(0.5 - 0.002 * 10, rel=1e-3)


def test_in_tensorpacks_replicated_trainer_the_towers_share_one_scale_and_stay_equal(tmp_path):
    """Two CPU towers under Tensorpack's SyncMultiGPUTrainerReplicated (gradients summed, as
    train.py), accumulating 2 steps, each tower reading its own datapoints: updates from C+C
    batches, one batch holding BAD (skipped, scale halved once), one more good batch."""
    from tensorpack import DataFromList, ModelDesc, TrainConfig, launch_train_with_config
    from tensorpack.callbacks import Callback
    from tensorpack.input_source import QueueInput
    from tensorpack.train import SyncMultiGPUTrainerReplicated
    from tensorpack.utils import logger

    class Toy(ModelDesc):
        def inputs(self):
            return [tf.TensorSpec((3,), tf.float32, "c")]

        def build_graph(self, c):
            w = tfv1.get_variable("w", initializer=W0)
            return tf.reduce_sum(c * w, name="cost")

        def optimizer(self):
            inner = LossScalingOptimizer(tfv1.train.MomentumOptimizer(LR, MOMENTUM), initial_scale=8.0,
                                         growth_interval=2)
            return AccumulatingOptimizer(inner, 2)

    class Capture(Callback):
        def _after_train(self):
            names = ["w", "tower1/w", "LossScale/scale", "LossScale/good_steps"]
            variables = {v.op.name: v for v in tfv1.global_variables() + tfv1.local_variables()}
            self.values = dict(zip(names, self.trainer.sess.run([variables[n] for n in names])))
            self.loss_scale_variables = sorted(n for n in variables if "LossScale" in n)

    # 2 steps x 2 towers per update: batches C+C+C+C, then C+C+BAD+C (skipped), then 4 x C
    data = [[C]] * 4 + [[C], [C], [BAD], [C]] + [[C]] * 4
    capture = Capture()
    logger.set_logger_dir(str(tmp_path / "log"), action="d")
    with tf.Graph().as_default():
        launch_train_with_config(
            TrainConfig(model=Toy(), data=QueueInput(DataFromList(data, shuffle=False)), callbacks=[capture],
                        steps_per_epoch=6, max_epoch=1, extra_callbacks=[]),
            SyncMultiGPUTrainerReplicated(2, average=False, mode="cpu"))
    values = capture.values
    assert capture.loss_scale_variables == ["LossScale/good_steps", "LossScale/scale"]  # one, not per tower
    np.testing.assert_allclose(values["w"], _momentum_by_hand([4 * C, None, 4 * C]), rtol=1e-5)
    np.testing.assert_allclose(values["tower1/w"], values["w"])
    assert (float(values["LossScale/scale"]), int(values["LossScale/good_steps"])) == (4.0, 1)
