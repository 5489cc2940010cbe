#!/usr/bin/env python
"""Speed and memory of MaskPlus on this machine; appends the results to BENCHMARKS.md.

    python scripts/benchmark.py --quick        # a few minutes on 2 CPU cores
    python scripts/benchmark.py                # more repeats, the R50-FPN training model
    python scripts/benchmark.py --precision fp32,bf16   # only the precision comparison (docs/PRECISION.md)

Measured in one run, each after a warm-up, as medians over repeats:
  * training step time of every technique preset and maskplus-all, as a ratio to the baseline
    (same model size, same synthetic data);
  * inference at 800x1333 (R50-FPN, 100 detections forced), split into network and
    post-processing (mask pasting + RLE encoding), for both paste modes, plus the technique
    presets' network time as a ratio to the baseline;
  * data-loader throughput (images/s, in-process mapping of the generated shapes set) against
    the training step rate;
  * segm evaluation time of a results file with pycocotools and faster-coco-eval;
  * the process's peak memory after each part, and the CPU's float32 matrix-multiply rate.
  * model FLOPs per image (convolutions and matrix products, counted from run-time shapes) and
    the FLOP/s achieved, against the CPU's measured matrix-multiply rate.

    python scripts/benchmark.py --predict-memory [--predict-repo DIR]

measures only the peak memory of ``predict.py --predict`` on a 48-megapixel photo with a random
R50-FPN model forced to 100 detections, all drawn (``--predict-repo``: the predict.py of another
checkout, e.g. an older commit, for a before/after comparison).
"""
import argparse
import datetime
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

from maskplus.compat import tf, tfv1
from config import parse_literal
from maskplus.precision import cpu_model_name
from maskplus.presets import model_overrides, technique_overrides
from scripts.measurements import commit, report
from maskplus.techniques import registry
from maskplus.testing import build_graph, config_snapshot, configure, synthetic_datapoint

#: the paper's rows whose training step is timed, one preset each
TECHNIQUE_PRESETS = ["baseline", "context-fusion-720-512-512-256", "deconv-pyramid", "boundary-refinement-improved",
                     "quasi-multitask-0.5x", "quasi-multitask-2x", "biased-training", "maskplus-all"]


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PartPeak:
    """Peak resident memory of one part of the run: the kernel's high-water mark only grows, so a
    thread samples the current RSS every 20 ms and keeps the maximum since the last reset()."""

    def __init__(self):
        self._max = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def _rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    def _sample(self):
        while True:
            rss = self._rss_mb()
            with self._lock:
                self._max = max(self._max, rss)
            time.sleep(0.02)

    def reset(self):
        """Return the peak since the last reset (MB) and start a new part."""
        with self._lock:
            peak, self._max = max(self._max, self._rss_mb()), 0
        return peak


def median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def technique_config(name, model):
    """The preset's MASKPLUS switches as {key: value}, widths scaled to the benchmark model's FPN width."""
    pairs = (arg.split("=", 1) for arg in technique_overrides(name, model.get("FPN.NUM_CHANNEL", 256)))
    return {key: parse_literal(value) for key, value in pairs}


def technique_rows(model, presets=TECHNIQUE_PRESETS):
    """{row: {key: value}}: each of ``presets`` (its switches), then each registered technique that none
    of them switches on (a plug-in) in its default form (``enable``), so that a new technique is timed."""
    rows = {name: technique_config(name, model) for name in presets}
    covered = {key for switches in rows.values() for key in switches}
    for technique in registry.registered():
        if not covered & set(technique.enable):
            rows[f"+{technique.name}"] = dict(technique.enable)
    return rows


def train_step_times(model, repeats, size):
    dp = synthetic_datapoint(h=size[0], w=size[1], boxes=((20, 30, 120, 140), (100, 60, 230, 200), (150, 10, 200, 60)),
                         labels=(1, 2, 3))
    results = {}
    for name, switches in technique_rows(model).items():
        with config_snapshot():
            configure(dict(model, **switches), training=True, tiny=False)
            graph, ph, _ = build_graph(True)
            with graph.as_default():
                cost = graph.get_tensor_by_name("total_cost:0")
                train_op = tfv1.train.MomentumOptimizer(1e-4, 0.9).minimize(cost)
                feed = {ph[k]: v for k, v in dp.items()}
                with tfv1.Session(config=_session_config()) as sess:
                    sess.run(tfv1.global_variables_initializer())
                    results[name] = median_time(lambda: sess.run(train_op, feed), repeats, warmup=2)
        print(f"  train step {name:34s} {results[name]:.3f} s", flush=True)
    return results


def _session_config(precision="fp32"):
    from maskplus.engine.session import session_config
    from config import config as cfg
    return session_config(precision, cfg.TRAIN.INTRA_OP_THREADS)


def network_flops(graph, feed):
    """FLOPs (2 x multiply-adds) of every convolution, deconvolution and matrix product of one
    forward pass, from the shapes at run time: the graph's shapes are dynamic (padded image, a
    data-dependent number of boxes), which the TF profiler cannot count. RoIAlign, norms and
    element-wise ops are left out (well under 1% of the arithmetic)."""
    with graph.as_default():
        ops = [op for op in graph.get_operations() if op.type in ("Conv2D", "Conv2DBackpropInput", "MatMul")]
        shapes = {op.name: [tf.shape(t) for t in op.inputs] + [tf.shape(op.outputs[0])] for op in ops}
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            values = sess.run(shapes, feed)
    total = 0
    for op in ops:
        *ins, out = values[op.name]
        if op.type == "Conv2D":  # filter [kh, kw, cin, cout]
            total += 2 * np.prod(out, dtype=np.int64) * np.prod(ins[1][:3], dtype=np.int64)
        elif op.type == "Conv2DBackpropInput":  # filter [kh, kw, cout, cin]; ins[2] is the small input
            total += 2 * np.prod(ins[2], dtype=np.int64) * np.prod(ins[1][:3], dtype=np.int64)
        else:
            inner = ins[0][0] if op.get_attr("transpose_a") else ins[0][1]
            total += 2 * np.prod(out, dtype=np.int64) * inner
    return int(total)


def inference_times(model, repeats, presets):
    """Network and post-processing seconds at 800x1333 with 100 detections."""
    from maskplus.engine.checkpoint import export_npz
    from maskplus.engine.inference import build_predictor, postprocess, run_network
    from config import config as cfg
    image = np.random.RandomState(0).randint(0, 255, (800, 1333, 3)).astype(np.uint8)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in presets:
            with config_snapshot():
                configure(dict(model, **technique_config(name, model), **{"TEST.RESULT_SCORE_THRESH": 0.0}),
                          training=False, tiny=False, class_names=[f"c{i}" for i in range(80)])
                graph, ph, _ = build_graph(False)
                flops = network_flops(graph, {ph["image"]: image.astype(np.float32)})
                weights = os.path.join(tmp, f"{name}.npz")
                with graph.as_default(), tfv1.Session() as sess:
                    sess.run(tfv1.global_variables_initializer())
                    export_npz(sess, weights)
                predictor = build_predictor(weights)
                net = median_time(lambda: run_network(predictor, image), repeats)
                result = run_network(predictor, image)
                entry = {"network": net, "detections": len(result.boxes), "flops": flops}
                if name == "baseline":
                    for accurate in (True, False):
                        cfg.freeze(False)
                        cfg.MRCNN.ACCURATE_PASTE = accurate
                        entry["post_accurate" if accurate else "post_fast"] = median_time(
                            lambda: postprocess(result, as_rle=True), repeats)
                out[name] = entry
            print(f"  inference {name:34s} network {out[name]['network']:.2f} s ({out[name]['detections']} detections)",
                  flush=True)
    return out


def loader_throughput(seconds):
    """Images/s of the training mapper (in-process) over the generated shapes set."""
    from maskplus.data import shapes
    from maskplus.data.coco import COCOFormatDataset
    from maskplus.data.pipeline import TrainingMapper
    with tempfile.TemporaryDirectory() as tmp, config_snapshot():
        shapes.write_split(tmp, "train2017", 40, seed=0, progress=False)
        from maskplus.presets import preset_overrides
        from config import config as cfg
        cfg.update_args(preset_overrides("demo-cpu"))
        configure({}, training=True, tiny=False, class_names=shapes.CATEGORIES)
        ds = COCOFormatDataset("bench", os.path.join(tmp, "annotations", "instances_train2017.json"),
                               os.path.join(tmp, "train2017"))
        records = ds.training_records()
        mapper = TrainingMapper.from_config(cfg)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            mapper((records[count % len(records)], count))
            count += 1
        return count / (time.perf_counter() - start)


def evaluation_times(repeats, images, copies):
    """Seconds to score segm (+bbox) of a results file: pycocotools vs faster-coco-eval.
    ``images`` generated validation images, ``copies`` scored copies of each ground-truth mask."""
    import json
    from maskplus.data import shapes
    from maskplus.evaluation.coco_eval import evaluate_coco
    from pycocotools import mask as mask_util
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = shapes.write_split(tmp, "val2017", images, seed=1, progress=False)
        gt = json.load(open(gt_path))
        image_of = {i["id"]: i for i in gt["images"]}
        rng = np.random.RandomState(0)
        results = []
        for ann in gt["annotations"]:
            img = image_of[ann["image_id"]]
            rle = mask_util.merge(mask_util.frPyObjects(ann["segmentation"], img["height"], img["width"]))
            mask = np.roll(mask_util.decode(rle), tuple(rng.randint(-3, 4, 2)), axis=(0, 1))
            enc = mask_util.encode(np.asfortranarray(mask[:, :, None]))[0]
            enc["counts"] = enc["counts"].decode()
            for _ in range(copies):  # true positives and jittered duplicates, like a detector's output
                results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
                                "score": float(rng.uniform()), "segmentation": enc})
        out = {}
        for backend in ("pycocotools", "faster"):
            out[backend] = median_time(lambda: evaluate_coco(gt_path, results, iou_types=("bbox", "segm"),
                                                             boundary=False, backend=backend), repeats, warmup=0)
        out["results"] = len(results)
        return out


def predict_peak_memory(repo=ROOT, size=(6000, 8000), detections=100):
    """(peak RSS in MB of one ``predict.py --predict`` process, detections found) on a random
    ``size`` (h, w) JPEG: smooth colours with noise, like a photo. The model is a random R50-FPN
    .npz (scripts/make_random_model.py) whose scores pass every threshold, so there are
    ``detections`` masks to paste and draw. A wrapper process runs predict.py as its only child
    and reports the child's high-water mark."""
    import subprocess
    import cv2
    config = ["DATA.CLASS_NAMES=coco", "TEST.RESULT_SCORE_THRESH=0.0", "TEST.RESULT_SCORE_THRESH_VIS=0.0",
              f"TEST.RESULTS_PER_IM={detections}"]
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "random_r50fpn.npz")
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_random_model.py"), "--out", model,
                        "--config", *config], check=True, capture_output=True)
        h, w = size
        yy, xx = np.mgrid[0:h:8, 0:w:8].astype(np.float32)
        small = np.stack([128 + 100 * np.sin(xx / 300), 128 + 100 * np.cos(yy / 200), 128 + 60 * np.sin((xx + yy) / 500)], -1)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        img += np.random.RandomState(0).normal(0, 8, (h, w, 1)).astype(np.float32)
        image = os.path.join(tmp, "photo.jpg")
        cv2.imwrite(image, img.clip(0, 255).astype(np.uint8))
        del img, small, yy, xx
        wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                   "sys.stdout.write(p.stdout + p.stderr[-3000:] if p.returncode else p.stdout); "
                   "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, os.path.join(repo, "predict.py"),
                               "--predict", image, "--load", model, "--output-dir", os.path.join(tmp, "out"),
                               "--config", *config], capture_output=True, text=True, cwd=repo)
        lines = proc.stdout.splitlines()
        peak = [int(line.split()[1]) for line in lines if line.startswith("PEAK_KB")]
        found = [line for line in lines if "photo.jpg: " in line]
        if not peak or not found:
            raise RuntimeError(f"predict.py failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return peak[0] / 1024.0, int(found[0].split("photo.jpg: ", 1)[1].split(" detections", 1)[0])


def matmul_gflops(precision="fp32", n=2048):
    """The rate of one n x n matrix product alone: its inputs are variables made once, in bfloat16
    for bf16 (no cast in the timed run); only the product and the sum that fetches it are timed."""
    dtype = tf.bfloat16 if precision == "bf16" else tf.float32
    with tf.Graph().as_default(), tfv1.Session(config=_session_config(precision)) as sess:
        a, b = [tfv1.Variable(tf.cast(tf.random.normal([n, n], seed=i), dtype), name=f"m{i}") for i in (1, 2)]
        product = tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))
        sess.run(tfv1.global_variables_initializer())
        t = median_time(lambda: sess.run(product), 5)
    return 2 * n ** 3 / t / 1e9


def describe_nominal_peak():
    """'nominal float32 peak X GFLOP/s (how)' or 'nominal peak unknown (why)'."""
    from maskplus.precision import nominal_peak_gflops
    peak, how = nominal_peak_gflops()
    return f"nominal float32 peak {peak:.0f} GFLOP/s ({how})" if peak else f"nominal peak unknown ({how})"


# ------------------------------------------------------------------ precision comparison (--precision)
#: CPU flags that decide what bf16 does on a CPU (maskplus/precision.py)
BF16_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
PRECISION_SIZES = [(256, 320), (800, 1333)]


def _precision_choice(precision):
    """(choice, None) if ``precision`` runs on this machine, else (None, why not): maskplus/precision.py's
    rules, with MASKPLUS_BF16_WITHOUT_AVX512=1 honoured (what bf16 costs a CPU without AVX-512)."""
    from maskplus.precision import PrecisionError, resolve
    try:
        return resolve(precision), None
    except PrecisionError as e:
        return None, str(e).replace("TRAIN.PRECISION=", "")


def precision_train_step(model, size, precision, repeats):
    """Median seconds of one training step at ``size`` (h, w) in ``precision``."""
    dp = synthetic_datapoint(h=size[0], w=size[1], boxes=((20, 30, 120, 140), (100, 60, 230, 200), (150, 10, 200, 60)),
                             labels=(1, 2, 3))
    with config_snapshot():
        configure(dict(model, **{"PREPROC.MAX_SIZE": max(size)}), training=True, tiny=False)
        graph, ph, _ = build_graph(True)
        with graph.as_default():
            train_op = tfv1.train.MomentumOptimizer(1e-4, 0.9).minimize(graph.get_tensor_by_name("total_cost:0"))
            feed = {ph[k]: v for k, v in dp.items()}
            with tfv1.Session(config=_session_config(precision)) as sess:
                sess.run(tfv1.global_variables_initializer())
                return median_time(lambda: sess.run(train_op, feed), repeats, warmup=2)


def precision_network(model, size, precisions, repeats):
    """{precision: median seconds of the inference network} on a random ``size`` image, one random
    model file for all precisions (100 detections forced by a zero score threshold)."""
    from maskplus.engine.checkpoint import export_npz
    from maskplus.engine.inference import build_predictor, run_network
    image = np.random.RandomState(0).randint(0, 255, (size[0], size[1], 3)).astype(np.uint8)
    out = {}
    with tempfile.TemporaryDirectory() as tmp, config_snapshot():
        configure(dict(model, **{"TEST.RESULT_SCORE_THRESH": 0.0, "PREPROC.TEST_SHORT_EDGE_SIZE": min(size),
                                 "PREPROC.MAX_SIZE": max(size)}),
                  training=False, tiny=False, class_names=[f"c{i}" for i in range(80)])
        graph, _, _ = build_graph(False)
        weights = os.path.join(tmp, "model.npz")
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            export_npz(sess, weights)
        for precision in precisions:
            predictor = build_predictor(weights, precision)
            out[precision] = median_time(lambda: run_network(predictor, image), repeats)
    return out


def precision_comparison(precisions, model, sizes, repeats):
    """Markdown lines: the CPU (model name, the flags that decide bf16, the matmul rate in each
    precision), then per precision the training step and the inference network at each size."""
    from maskplus.precision import cpu_flags
    flags = cpu_flags()
    choices = {p: _precision_choice(p) for p in precisions}
    runnable = [p for p in precisions if choices[p][0] is not None]
    run_as = {p: choices[p][0].precision for p in runnable}  # auto: what it resolves to
    rates = {p: matmul_gflops(run_as[p]) for p in runnable}
    lines = ["", f"Precision comparison, CPU {cpu_model_name()}, flags: "
                 f"{' '.join(f for f in BF16_FLAGS if f in flags) or 'none of ' + ', '.join(BF16_FLAGS)}; "
                 f"matmul 2048^2: " + (", ".join(f"{p} {r:.1f} GFLOP/s" for p, r in rates.items()) or "not run")
             + f"; {describe_nominal_peak()}", ""]
    for p, (choice, why_not) in choices.items():
        if why_not:
            lines.append(f"- {p}: not run: {why_not}")
        elif choice.reason:
            lines.append(f"- {p}: {choice.reason}")
    if not runnable:
        return lines
    header = [f"train step {h}x{w}" for h, w in sizes] + [f"network {h}x{w}" for h, w in sizes]
    lines += ["", "| precision | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    cells = {p: [] for p in runnable}
    for size in sizes:
        for p in runnable:
            cells[p].append(precision_train_step(model, size, run_as[p], repeats))
            print(f"  train step {size[0]}x{size[1]} {p}: {cells[p][-1]:.3f} s", flush=True)
    for size in sizes:
        times = precision_network(model, size, sorted(set(run_as.values())), max(2, repeats // 3))
        for p in runnable:
            t = times[run_as[p]]
            cells[p].append(t)
            print(f"  network {size[0]}x{size[1]} {p}: {t:.3f} s", flush=True)
    base = cells.get("fp32")
    for p in runnable:
        ratio = [f" ({v / b:.2f}x fp32)" if base and p != "fp32" else "" for v, b in zip(cells[p], base or cells[p])]
        lines.append(f"| {p} | " + " | ".join(f"{v:.3f} s{r}" for v, r in zip(cells[p], ratio)) + " |")
    return lines


def heading(command):
    """A section heading that names what was measured: date, command, commit and CPU (the docs cite
    measurements by their heading)."""
    return f"## {datetime.date.today()} — `{command}` (commit {commit()}, {cpu_model_name()}, {os.cpu_count()} cores)"


def machine():
    import tensorpack
    return f"{cpu_model_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, TensorFlow {tf.__version__}, " \
           f"Tensorpack {tensorpack.__version__}, NumPy {np.__version__}"


def build_parser():
    """This script's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a small training model")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    parser.add_argument("--predict-memory", action="store_true",
                        help="only the peak memory of predict.py on a 48-megapixel photo (100 detections)")
    parser.add_argument("--predict-repo", default=ROOT, metavar="DIR",
                        help="with --predict-memory: the checkout whose predict.py is measured")
    parser.add_argument("--precision", metavar="LIST",
                        help="only compare these precisions (e.g. fp32,bf16): the R50-FPN training step and inference "
                             "network at 256x320 and 800x1333, the CPU's flags and matmul rate per precision")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.predict_memory:
        print("predict.py on a 48 MP photo ...", flush=True)
        peak, found = predict_peak_memory(os.path.abspath(args.predict_repo))
        text = (f"{heading('python scripts/benchmark.py --predict-memory')}\n\nMachine: {machine()}\n\n"
                f"- `predict.py --predict` on a 48 MP (8000x6000) JPEG, random R50-FPN, {found} detections pasted and "
                f"drawn{'' if args.predict_repo == ROOT else f' (predict.py of {args.predict_repo})'}: "
                f"peak RSS {peak:.0f} MB\n")
        return report(text, write=not args.no_write)
    repeats = 3 if args.quick else 10
    part_peak = PartPeak()
    command = (f"python scripts/benchmark.py{' --quick' if args.quick else ''}"
               f"{' --precision ' + args.precision if args.precision else ''}")
    lines = [heading(command), "", f"Machine: {machine()}", ""]
    if args.precision:
        lines += precision_comparison(args.precision.split(","), {"TRAIN.NUM_GPUS": 1}, PRECISION_SIZES, repeats)
        return report("\n".join(lines), write=not args.no_write)

    print("matrix multiply ...", flush=True)
    gflops = matmul_gflops()
    lines.append(f"- float32 matmul (2048^2): {gflops:.1f} GFLOP/s (the CPU's ceiling for dense layers); "
                 f"{describe_nominal_peak()}")

    if args.quick:  # the CPU demo's model, one tower
        demo = (arg.split("=", 1) for arg in model_overrides("demo-cpu"))
        train_model = dict({key: parse_literal(value) for key, value in demo}, **{"TRAIN.NUM_GPUS": 1})
        size = (train_model["PREPROC.MAX_SIZE"],) * 2
    else:  # R50-FPN at 256x320, as measured with the reference example
        train_model, size = {"TRAIN.NUM_GPUS": 1, "PREPROC.MAX_SIZE": 320}, (256, 320)
    print("training steps ...", flush=True)
    part_peak.reset()
    steps = train_step_times(train_model, repeats, size)
    base = steps["baseline"]
    lines += ["", f"Training step ({'small GN ResNet-FPN' if args.quick else 'R50-FPN'}, {size[0]}x{size[1]}, "
              f"median of {repeats}):", "", "| preset | s/step | ratio to baseline |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {v / base:.2f} |" for k, v in steps.items()]
    lines.append(f"\nProcess peak RSS during this part: {part_peak.reset():.0f} MB")

    print("inference ...", flush=True)
    r50 = {"TRAIN.NUM_GPUS": 1}
    infer = inference_times(r50, max(2, repeats // 3), ["baseline", "maskplus-all"])
    b, mp = infer["baseline"], infer["maskplus-all"]
    time_ratio = mp["network"] / b["network"]
    lines += ["", "Inference, R50-FPN, 800x1333 image, 100 detections (median):", "",
              f"- network: {b['network']:.2f} s; maskplus-all network: {mp['network']:.2f} s "
              f"(ratio {time_ratio:.2f}; goal <= 1.10)",
              f"- post-processing (paste + RLE) accurate: {b['post_accurate']:.3f} s, fast: {b['post_fast']:.3f} s; "
              f"end-to-end / network = {(b['network'] + b['post_accurate']) / b['network']:.2f} (goal <= 1.1)",
              f"- process peak RSS during this part: {part_peak.reset():.0f} MB",
              f"- maskplus-all / baseline: {mp['flops'] / b['flops']:.2f}x the FLOPs, {time_ratio:.2f}x the time"]
    for name, entry in infer.items():
        achieved = entry["flops"] / entry["network"] / 1e9
        lines.append(f"- {name}: {entry['flops'] / 1e9:.1f} GFLOPs per image (convolutions and matrix products), "
                     f"{achieved:.1f} GFLOP/s achieved = {100 * achieved / gflops:.0f}% of the matmul rate")

    print("data loader ...", flush=True)
    ips = loader_throughput(5 if args.quick else 20)
    loader_peak = part_peak.reset()
    step_rate = 1.0 / steps["maskplus-all"]
    lines += ["", f"Data loader (one process, demo preset, 256 px): {ips:.1f} images/s vs "
              f"{step_rate:.2f} training steps/s of maskplus-all above ({ips / step_rate:.1f}x; goal >= 2x with the "
              f"default workers); process peak RSS during this part: {loader_peak:.0f} MB"]

    print("evaluation ...", flush=True)
    ev = evaluation_times(1, 60, 5) if args.quick else evaluation_times(3, 500, 20)
    lines += ["", f"Evaluation of {ev['results']} results (bbox + segm): pycocotools {ev['pycocotools']:.2f} s, "
              f"faster-coco-eval {ev['faster']:.2f} s ({ev['pycocotools'] / ev['faster']:.1f}x; goal >= 3x); "
              f"process peak RSS during this part: {part_peak.reset():.0f} MB",
              "", f"Peak memory of the whole run: {peak_mb():.0f} MB", ""]
    report("\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
