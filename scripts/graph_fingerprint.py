"""The guard of a behaviour-preserving refactoring of the model: a fingerprint of the graphs.

For a set of tiny configurations (FPN with MaskPlus off and with every technique, C4, Cascade, FPN
without masks, ...), build the training and the inference graph, give every variable a value drawn
from a random generator seeded by the variable's *name* (so the values do not depend on the order in
which ops are created), feed fixed synthetic inputs, and record:

* the sorted variable names and shapes (global, local and trainable separately);
* in training: ``total_cost``, every term of its sum (by op name), every moving-summary statistic
  (by name), and the L2 norm of the gradient of ``total_cost`` for each trainable variable;
* at inference: ``output/boxes``, ``output/scores``, ``output/labels`` (and ``output/masks``).

The RoI sampler's ``tf.random.shuffle`` gets a fixed op seed while the graphs are built, so the
sampled RoIs do not depend on how many ops precede the sampler either. Sessions run on one thread.

Usage (not a test: the values depend on the machine's floating point, so they are compared with
themselves before and after a change on the same machine), from the repository root::

    python scripts/graph_fingerprint.py save /tmp/fp_base.pkl
    python scripts/graph_fingerprint.py compare /tmp/fp_base.pkl

(``python -m scripts.graph_fingerprint ...`` works as well.)

``compare`` exits 1 if a variable, loss, statistic, gradient norm or output differs (relative
1e-5), and lists renamed ops separately without failing.
"""
import argparse
import contextlib
import pickle
import sys
import zlib

import numpy as np

from maskplus.compat import tf, tfv1
from maskplus.testing import build_graph, config_snapshot, configure, synthetic_datapoint

ALL_TECHNIQUES = {
    "MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.CONTEXT_FUSION_DIMS": [32, 64],
    "MASKPLUS.DECONV_PYRAMID": True, "MASKPLUS.BOUNDARY_REFINEMENT": "improved",
    "MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"], "MASKPLUS.QUASI_MULTITASK_WEIGHT": 0.7,
    "MASKPLUS.BIASED_TRAINING": True, "MASKPLUS.MASK_LOSS_ALPHA": [[0, 1.5], [10, 1.0]],
}
C4 = {"MODE_FPN": False, "RPN.HEAD_DIM": 64, "RPN.TRAIN_PRE_NMS_TOPK": 300, "RPN.TRAIN_POST_NMS_TOPK": 100,
      "RPN.TEST_PRE_NMS_TOPK": 200, "RPN.TEST_POST_NMS_TOPK": 50}
C4_TECHNIQUES = {k: v for k, v in ALL_TECHNIQUES.items() if not k.startswith("MASKPLUS.CONTEXT_FUSION")}

#: name -> (config overrides, also train on an image without objects)
CONFIGS = {
    "fpn_baseline": ({}, True),
    "fpn_all_techniques": (ALL_TECHNIQUES, True),
    "fpn_variants": ({"MASKPLUS.BOUNDARY_REFINEMENT": "original", "MASKPLUS.QUASI_MULTITASK": ["2x"],
                      "MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.CONTEXT_FUSION_LEVEL": 5,
                      "MASKPLUS.CONTEXT_FUSION_DIMS": [48, 64], "MASKPLUS.DECONV_PYRAMID": True,
                      "MASKPLUS.DECONV_PYRAMID_DIM": 32, "MASKPLUS.QUASI_MULTITASK_WEIGHT": 1.3,
                      "FPN.MRCNN_HEAD_FUNC": "maskrcnn_up4conv_head",
                      "FPN.FRCNN_HEAD_FUNC": "fastrcnn_4conv1fc_gn_head", "FPN.FRCNN_CONV_HEAD_DIM": 32,
                      "TEST.MASK_BATCH_MULTIPLE": 4}, False),
    "c4_baseline": (C4, True),
    "c4_techniques": (dict(C4, **C4_TECHNIQUES), True),
    "cascade": ({"FPN.CASCADE": True, "MRCNN.TRAIN_MAX_FG_PER_IM": 1}, False),
    "cascade_techniques": (dict(ALL_TECHNIQUES, **{"FPN.CASCADE": True}), False),
    "fpn_no_mask": ({"MODE_MASK": False}, False),
    "c4_no_mask": (dict(C4, MODE_MASK=False), False),
}
H, W = 96, 120  # not square, so h and w cannot be confused


def _value_for(name, shape):
    """A deterministic value for a variable, by name, at a scale that keeps activations sane."""
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    noise = rng.standard_normal(shape).astype(np.float32)
    leaf = name.split("/")[-1]
    if name.endswith("variance/EMA"):
        return 1.0 + 0.1 * np.abs(noise)
    if name.endswith("mean/EMA") or leaf in ("beta", "b"):
        return 0.1 * noise
    if leaf == "gamma":
        return 1.0 + 0.1 * noise
    if leaf == "alpha" and len(shape) == 0:  # PReLU slope
        return np.float32(0.25) + 0.05 * noise
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[:-1]))
        return noise * np.float32(np.sqrt(1.0 / fan_in))
    return None  # e.g. mask_loss_alpha: keep its initial value (from the config)


@contextlib.contextmanager
def _seeded_shuffle(op_seed=1234):
    real = tf.random.shuffle

    def shuffle(value, seed=None, name=None):
        return real(value, seed=op_seed, name=name)

    tf.random.shuffle = shuffle
    try:
        yield
    finally:
        tf.random.shuffle = real


def _session():
    return tfv1.Session(config=tfv1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1))


def _load_values(sess):
    sess.run([tfv1.global_variables_initializer(), tfv1.local_variables_initializer()])
    for v in tfv1.global_variables():
        value = _value_for(v.op.name, v.shape.as_list())
        if value is not None:
            v.load(value, sess)


def _variables(graph):
    with graph.as_default():
        return {kind: sorted((v.op.name, tuple(v.shape.as_list())) for v in coll()) for kind, coll in
                (("global", tfv1.global_variables), ("local", tfv1.local_variables),
                 ("trainable", tfv1.trainable_variables))}


def _op_names(graph):
    """Every op's name (informational: tests and logs find tensors by some of these names)."""
    return sorted(op.name for op in graph.get_operations())


def _empty_datapoint():
    dp = synthetic_datapoint(h=H, w=W, boxes=np.zeros((0, 4), np.float32), labels=())
    dp["gt_boxes"] = dp["gt_boxes"].reshape(-1, 4)
    return dp


def fingerprint_training(datapoints):
    with _seeded_shuffle():
        graph, ph, _ = build_graph(True)
    out = {"variables": _variables(graph), "op_names": _op_names(graph), "runs": []}
    with graph.as_default():
        total = graph.get_tensor_by_name("total_cost:0")
        terms = {t.op.name: t for t in total.op.inputs}
        summaries = {t.op.name: t for t in tfv1.get_collection("MOVING_SUMMARY_OPS")}
        trainable = tfv1.trainable_variables()
        grads = tf.gradients(total, trainable)
        norms = {v.op.name: tf.norm(g) for v, g in zip(trainable, grads) if g is not None}
        out["no_gradient"] = sorted(v.op.name for v, g in zip(trainable, grads) if g is None)
        fetch = {"total_cost": total, "terms": terms, "summaries": summaries, "grad_norms": norms}
        for dp in datapoints:
            with _session() as sess:
                _load_values(sess)
                out["runs"].append(sess.run(fetch, {ph[k]: v for k, v in dp.items() if k in ph}))
    return out


def fingerprint_inference(image):
    graph, ph, _ = build_graph(False)
    out = {"variables": _variables(graph), "op_names": _op_names(graph)}
    with graph.as_default():
        names = [n for n in ("boxes", "scores", "labels", "masks")
                 if any(op.name == f"output/{n}" for op in graph.get_operations())]
        with _session() as sess:
            _load_values(sess)
            out["outputs"] = dict(zip(names, sess.run([f"output/{n}:0" for n in names], {ph["image"]: image})))
    return out


def fingerprint(names=None):
    result = {}
    for name, (overrides, with_empty) in CONFIGS.items():
        if names and name not in names:
            continue
        with config_snapshot():
            configure(overrides, training=True)
            dps = [synthetic_datapoint(h=H, w=W, boxes=((10, 12, 50, 60), (40, 30, 110, 80)))]
            if with_empty:
                dps.append(_empty_datapoint())
            train = fingerprint_training(dps)
        with config_snapshot():
            configure(overrides, training=False)
            infer = fingerprint_inference(dps[0]["image"])
        result[name] = {"train": train, "inference": infer}
        print(f"{name}: {len(train['variables']['global'])} train variables, "
              f"{len(infer['outputs'].get('boxes', []))} detections, total_cost "
              f"{[float(r['total_cost']) for r in train['runs']]}", flush=True)
    return result


def _compare(path, a, b, problems, rtol, atol):
    if isinstance(a, dict):
        if set(a) != set(b):
            problems.append(f"{path}: keys differ: only before {sorted(set(a) - set(b))}, "
                            f"only after {sorted(set(b) - set(a))}")
        for k in sorted(set(a) & set(b)):
            _compare(f"{path}/{k}", a[k], b[k], problems, rtol, atol)
    elif isinstance(a, list) and a and isinstance(a[0], dict):
        if len(a) != len(b):
            problems.append(f"{path}: {len(a)} runs before, {len(b)} after")
        for i, (x, y) in enumerate(zip(a, b)):
            _compare(f"{path}[{i}]", x, y, problems, rtol, atol)
    elif isinstance(a, list):
        if a != b:
            problems.append(f"{path}: differ: only before {sorted(set(a) - set(b))[:20]}, "
                            f"only after {sorted(set(b) - set(a))[:20]}")
    else:
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            problems.append(f"{path}: shape {x.shape} before, {y.shape} after")
        elif not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            diff = np.abs(x.astype(np.float64) - y.astype(np.float64)).max()
            problems.append(f"{path}: values differ (max abs diff {diff:.3g})")


def compare(before, after, rtol=1e-5, atol=1e-6):
    """Differences between two fingerprints, as a list of lines (empty: equal)."""
    problems = []
    _compare("", before, after, problems, rtol, atol)
    return problems


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["save", "compare"])
    parser.add_argument("path")
    parser.add_argument("--only", nargs="*", help="configurations to run (default: all)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    result = fingerprint(args.only)
    if args.action == "save":
        with open(args.path, "wb") as f:
            pickle.dump(result, f)
        print(f"saved {args.path}")
        return 0
    with open(args.path, "rb") as f:
        before = pickle.load(f)
    if args.only:
        before = {k: v for k, v in before.items() if k in args.only}
    problems = compare(before, result)
    renamed = [p for p in problems if "/op_names" in p.split(":")[0]]
    problems = [p for p in problems if p not in renamed]
    if renamed:
        print("op names changed (check that no test, log or user-visible name depends on them):")
        print("\n".join(renamed))
    print("\n".join(problems) if problems else "fingerprint unchanged (variables, losses, gradients, outputs)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
