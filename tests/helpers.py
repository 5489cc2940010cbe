"""Helpers for model tests. The tiny configuration, config snapshots, graph building, random model
files and synthetic datapoints live in :mod:`maskplus.testing` (scripts use them too)."""
from maskplus.compat import tf, tfv1
from maskplus.testing import (TINY, build_graph, config_snapshot, configure, synthetic_datapoint,  # noqa: F401
                              write_random_model)


def variable_shapes(graph):
    """{name: shape} of the variables a model file holds (trainable + model variables)."""
    with graph.as_default():
        from maskplus.engine.checkpoint import model_variables
        return {name: v.shape.as_list() for name, v in model_variables().items()}


def checkpoint_arrays(prefix):
    """{name: array} of every entry of a TF checkpoint, read with TensorFlow's own reader."""
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def train_steps(graph, placeholders, model, datapoint, steps=2, lr=0.01):
    """Run ``steps`` SGD steps of the model's total cost on one datapoint; returns the costs."""
    with graph.as_default():
        cost = graph.get_tensor_by_name("total_cost:0")
        train_op = tfv1.train.MomentumOptimizer(lr, 0.9).minimize(cost)
        feed = {placeholders[k]: v for k, v in datapoint.items()}
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            return [sess.run([cost, train_op], feed)[0] for _ in range(steps)]


def bilinear_sample(img, y, x):
    """Bilinear sample of a 2-D map at (y, x), pixel centres at integers, the border replicated."""
    import numpy as np
    h, w = img.shape
    y = min(max(y, 0.0), h - 1.0)
    x = min(max(x, 0.0), w - 1.0)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    dy, dx = y - y0, x - x0
    return (img[y0, x0] * (1 - dy) * (1 - dx) + img[y0, x1] * (1 - dy) * dx
            + img[y1, x0] * dy * (1 - dx) + img[y1, x1] * dy * dx)


def roi_align_reference(fmap, box, res):
    """Slow RoIAlign of one 2-D map: each of res x res bins averages 2 x 2 samples at the centres of
    its sub-cells; ``box`` in map pixels, pixel i covering [i, i + 1) (so its centre is i + 0.5)."""
    import numpy as np
    x1, y1, x2, y2 = box
    bw, bh = (x2 - x1) / res, (y2 - y1) / res
    out = np.zeros((res, res))
    for i in range(res):
        for j in range(res):
            samples = [bilinear_sample(fmap, y1 + (i + (sy + 0.5) / 2) * bh - 0.5, x1 + (j + (sx + 0.5) / 2) * bw - 0.5)
                       for sy in range(2) for sx in range(2)]
            out[i, j] = np.mean(samples)
    return out


def position_dependent_map(height, width, channels=2, offset=0.0):
    """float32 1 x C x H x W map whose value differs with the channel, the row and the column
    (smooth but not linear, so a crop taken at the wrong place or scale shows)."""
    import numpy as np
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    maps = [offset + 10 * c + 5 * np.sin(0.7 * y + 0.2 * c) + 3 * np.cos(0.45 * x) + 0.05 * x * y
            for c in range(channels)]
    return np.stack(maps)[None].astype(np.float32)


def emulate_bf16_without_avx512(monkeypatch):
    """Lets the bf16 rewrite run on a CPU without AVX-512 (an explicit bf16 is refused there,
    maskplus/precision.py): oneDNN has no bf16 kernels there and TensorFlow falls back to Eigen's,
    which lack NCHW pooling and NCHW transposed/backward convolutions, so these ops are kept in
    float32 (precision.eigen_bf16_environment). The convolutions' forward passes (NHWC here,
    maskplus/compat.py), the matrix products and the element-wise ops run in bf16."""
    from maskplus.precision import cpu_bf16, cpu_flags, eigen_bf16_environment
    if cpu_bf16(cpu_flags()) is None:
        for name, value in eigen_bf16_environment().items():
            monkeypatch.setenv(name, value)


def restore_eigen_bf16_environment_afterwards(monkeypatch):
    """Unsets the variables precision.resolve() sets for bf16 on Eigen's kernels, and has
    ``monkeypatch`` unset them again at teardown (its delenv of an absent variable records
    nothing, so each is set first), so that no later test's rewrite sees them."""
    from maskplus.precision import eigen_bf16_environment
    for name in eigen_bf16_environment():
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def write_checkpoint(prefix, step=16, shape=(3, 5)):
    """A small but real TensorFlow checkpoint at ``prefix`` (one float variable and ``global_step``
    = ``step``), written as train.py's saver writes one; returns its arrays."""
    import numpy as np
    graph = tf.Graph()
    with graph.as_default():
        value = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) * 0.37
        tfv1.get_variable("w", initializer=value)
        tfv1.get_variable("global_step", initializer=np.int64(step))
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            tfv1.train.Saver(save_relative_paths=True).save(sess, str(prefix), write_meta_graph=False,
                                                             write_state=False)
    return {"w": value, "global_step": np.int64(step)}


def restore_into_tiny_graph(make_init):
    """Build the inference graph of the current config, run on it the session init that
    ``make_init()`` makes (inside the graph) and return ``(init, {variable name: value})`` of every
    global variable afterwards."""
    graph, _, _ = build_graph(False)
    with graph.as_default():
        init = make_init()
        init._setup_graph()
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            init._run_init(sess)
            return init, {v.op.name: sess.run(v) for v in tfv1.global_variables()}
