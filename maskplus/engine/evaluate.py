"""COCO evaluation of a predictor over the ``DATA.VAL`` datasets: results files, AP tables, JSON.

Results are never stale: with a model, every dataset is predicted again and an existing results
file is replaced atomically (the new file is complete before it takes the name), the old one kept
beside it as ``<name>.previous-<its time>.json`` with its metrics; without a model, existing
results files are re-scored and the output says so. Each ``-metrics.json`` records which model
produced the results it scores (and a hash of them), so a file from another run is recognisable.
"""
import datetime
import glob
import hashlib
import os
from typing import NamedTuple

from maskplus import compat  # noqa: F401  (first: its shims precede Tensorpack's TensorFlow)
from tensorpack.utils import logger
from tqdm import tqdm

from maskplus import atomic
from maskplus.data.coco import get_dataset
from maskplus.data.pipeline import get_eval_dataflow
from maskplus.engine.inference import predict_dataflow
from maskplus.evaluation.coco_eval import (ResultsMismatch, detections_to_coco_results, evaluate_coco, file_sha1,
                                           format_metrics_table, metrics_path, recorded_evaluation)


class EvaluationError(ValueError):
    """An evaluation that cannot be done as asked (missing results file, unwritable output,
    results that do not belong to the dataset); the message says which file and what to do."""


class EvaluationParams(NamedTuple):
    """What an evaluation needs of the config: the datasets (``DATA.VAL``), whether the model
    predicts masks (``MODE_MASK``: mask AP besides box AP) and whether Boundary AP is computed
    (``TRAIN.BOUNDARY_AP``)."""
    datasets: tuple
    masks: bool
    boundary: bool

    @classmethod
    def from_config(cls, cfg):
        """From the finalised ``cfg`` (an argument: this module never imports the config)."""
        return cls(tuple(cfg.DATA.VAL), bool(cfg.MODE_MASK), cfg.TRAIN.BOUNDARY_AP)


def run_inference(predictor, dataset_name, results_json, masks):
    """Predict every image of a dataset and write COCO-format results to ``results_json`` (with
    the detections' masks when ``masks``)."""
    results = predict_dataset(predictor, dataset_name, masks)
    atomic.write_json(results_json, results)
    logger.info(f"Wrote {len(results)} detections of '{dataset_name}' to {results_json}.")
    return results


def predict_dataset(predictor, dataset_name, masks):
    """COCO-format results (a list of dicts) of the predictor on every image of a dataset, with
    the detections' masks when ``masks`` (``MODE_MASK``)."""
    dataset = get_dataset(dataset_name)
    label_to_cat = dataset.label_to_category_id
    results = []
    dataflow = get_eval_dataflow(dataset_name)
    bar = tqdm(total=len(dataflow), desc=f"Inference {dataset_name}", unit="img", leave=False)

    def collect(image_id, detections):
        results.extend(detections_to_coco_results(
            image_id, [d.box for d in detections], [d.score for d in detections],
            [d.class_id for d in detections], [d.mask for d in detections] if masks else None, label_to_cat))
        bar.update(1)

    predict_dataflow(predictor, dataflow, collect)
    bar.close()
    return results


def score_results(dataset_name, results_json, params, model=None, rescored=False):
    """AP metrics of a results file against a dataset's annotations (the kinds :class:`EvaluationParams`
    ``params`` asks for); printed and saved as JSON with the model that produced the results
    (``model``: :func:`describe_model`'s dict or None)."""
    dataset = get_dataset(dataset_name)
    iou_types = ("bbox", "segm") if params.masks else ("bbox",)
    try:
        metrics = evaluate_coco(dataset.coco, results_json, iou_types=iou_types, boundary=params.boundary)
    except ResultsMismatch as e:
        raise EvaluationError(f"The results file '{results_json}' does not fit dataset '{dataset_name}' "
                              f"({dataset.json_path}): {e}") from None
    except (ValueError, TypeError, KeyError, IndexError, AssertionError) as e:
        raise EvaluationError(f"The results file '{results_json}' cannot be scored against dataset "
                              f"'{dataset_name}' ({dataset.json_path}): {type(e).__name__}: {e}. Is it a COCO "
                              f"results list of this dataset's images?") from None
    table = format_metrics_table(metrics)
    logger.info(f"Evaluation of '{dataset_name}' ({results_json}):\n{table}")
    atomic.write_json(metrics_path(results_json), {
        "dataset": dataset_name, "annotations": dataset.json_path,  # compare_results.py finds the ground truth
        "results": os.path.abspath(results_json), "results_sha1": file_sha1(results_json),
        "model": model, "produced": "re-scored without running a model" if rescored else "model run",
        "written": _now(), "metrics": metrics})
    return metrics


def describe_model(load):
    """What ``--load`` named, recorded with the results: the path given, the checkpoint it
    resolved to (a directory's latest checkpoint), its global step, modification time and the
    SHA-1 of its files (:func:`weights_sha1`)."""
    from maskplus.engine.checkpoint import checkpoint_global_step, verify_checkpoint
    kind, resolved = verify_checkpoint(load)
    stat_path = resolved if kind == "npz" else resolved + ".index"
    return {"load": os.path.abspath(os.path.expanduser(load)), "checkpoint": os.path.abspath(resolved),
            "global_step": checkpoint_global_step(load) if kind == "tf" else None,
            "modified": _time(os.path.getmtime(stat_path)), "weights_sha1": weights_sha1(kind, resolved)}


def weights_sha1(kind, resolved):
    """SHA-1 of a weights file (``kind`` "npz") or of a TF checkpoint's index and data files, in
    order (``kind`` "tf", ``resolved`` its prefix): the contents, wherever the files are."""
    if kind == "npz":
        files = [resolved]
    else:
        files = [resolved + ".index"] + sorted(glob.glob(glob.escape(resolved) + ".data-*"))
    digest = hashlib.sha1()
    for path in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def describe_training_model(logdir, step):
    """The model a training run evaluates at ``step`` (its weights in memory), recorded with the
    results like :func:`describe_model`: the log directory's checkpoint of that step when one was
    written (checkpoints are saved before the evaluation at an epoch's end), else None."""
    path = os.path.abspath(os.path.join(logdir, f"model-{step}"))
    saved = os.path.isfile(path + ".index")
    return {"load": None, "log_directory": os.path.abspath(logdir), "checkpoint": path if saved else None,
            "global_step": int(step), "modified": _time(os.path.getmtime(path + ".index")) if saved else None}


def _model_name(model):
    if model.get("checkpoint"):
        return f"model '{model['checkpoint']}'"
    return f"the model of '{model.get('log_directory')}' at step {model.get('global_step')}"


def results_paths(output, datasets):
    """[(dataset name, results json)] for every dataset of ``datasets`` (``DATA.VAL``): ``output``
    itself for one dataset, ``<output>-<dataset>.json`` for each of several."""
    names = list(datasets)
    return [(name, output if len(names) == 1 else _suffixed(output, name)) for name in names]


def check_evaluation(output, with_model, datasets):
    """Everything an evaluation of ``datasets`` needs, checked before any model is built; raises
    EvaluationError. Without a model, every results file must exist (they are re-scored); with
    one, each must be a file or absent and its folder writable."""
    plan = results_paths(output, datasets)
    for _, path in plan:
        if os.path.isdir(path):
            raise EvaluationError(f"--evaluate: '{path}' is a folder; give the results file to write, e.g. "
                                  f"{os.path.join(path, 'results.json')}.")
    if not with_model:
        missing = [f"'{path}' (dataset '{name}')" for name, path in plan if not os.path.isfile(path)]
        if missing:
            raise EvaluationError(
                f"--evaluate without --load re-scores existing results files, and {', '.join(missing)} "
                f"{'does' if len(missing) == 1 else 'do'} not exist. Give --load MODEL to run a model.")
        return plan
    for _, path in plan:
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise EvaluationError(f"--evaluate: '{directory}' is a file, not a folder for '{os.path.basename(path)}'.")
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise EvaluationError(f"--evaluate: cannot create the folder '{directory}': {e.strerror}.") from None
        if not os.access(directory, os.W_OK):
            raise EvaluationError(f"--evaluate: the folder '{directory}' is not writable.")
    return plan


def check_dataset_classes(dataset_name, class_names):
    """The model's classes (``class_names``, no "BG") must be the dataset's in its category-id
    order: evaluation maps the model's label k to the dataset's k-th category. Raises EvaluationError."""
    names = list(get_dataset(dataset_name).class_names)
    if names != list(class_names):
        raise EvaluationError(
            f"Dataset '{dataset_name}' has other classes than the model ({len(names)}: {names[:5]}"
            f"{' ...' if len(names) > 5 else ''} vs {len(class_names)}: {list(class_names)[:5]}"
            f"{' ...' if len(class_names) > 5 else ''}), so its AP would score the model's labels against the "
            f"wrong categories. Evaluate on a dataset of the model's classes (DATA.VAL), in their order.")


def evaluate_datasets(predictor, output, params, model=None):
    """Evaluate every dataset of :class:`EvaluationParams` ``params``; ``output`` is the results
    json (see :func:`results_paths`). With a ``predictor`` the model runs on every dataset and existing
    results files are replaced (the old kept, see the module doc); with None, existing files are
    re-scored. ``model``: :func:`describe_model` of the predictor's weights, recorded with the
    metrics. Returns {dataset name: metrics}."""
    plan = check_evaluation(output, predictor is not None, params.datasets)
    all_metrics = {}
    for name, path in plan:
        if predictor is None:
            model_of_file = _recorded_model(path)
            who = (_model_name(model_of_file) if model_of_file
                   else "an unknown model (no -metrics.json recording this file's contents)")
            logger.info(f"Re-scoring the existing results file '{path}' without running a model (no --load); "
                        f"its detections were produced by {who}.")
            all_metrics[name] = score_results(name, path, params, model_of_file, rescored=True)
            continue
        results = predict_dataset(predictor, name, params.masks)  # the old file stays in place until this is complete
        kept = _keep_previous(path)
        atomic.write_json(path, results)  # atomic: the name holds either the old or the complete new file
        logger.info(f"Wrote {len(results)} detections of '{name}' to {path}"
                    + (f"; the previous file there is kept as '{kept}'." if kept else "."))
        all_metrics[name] = score_results(name, path, params, model)
    return all_metrics


def _keep_previous(path):
    """Hard-link (or copy) an existing results file and its metrics to ``<root>.previous-<mtime><ext>``
    and drop the stale metrics file; returns the kept path or None when there was nothing."""
    if not os.path.isfile(path):
        return None
    root, ext = os.path.splitext(path)
    stamp = datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y%m%d-%H%M%S")
    kept, k = f"{root}.previous-{stamp}{ext}", 1
    while os.path.exists(kept) or os.path.exists(metrics_path(kept)):
        k += 1
        kept = f"{root}.previous-{stamp}-{k}{ext}"
    _link_or_copy(path, kept)
    if os.path.isfile(metrics_path(path)):
        _link_or_copy(metrics_path(path), metrics_path(kept))
        os.remove(metrics_path(path))  # it describes the old results, not the new ones
    return kept


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # no hard links on this file system
        import shutil
        shutil.copy2(src, dst)


def _recorded_model(results_json):
    """The model recorded in the results file's metrics json, if that json describes exactly this file."""
    info = recorded_evaluation(results_json)
    return info.get("model") if info and isinstance(info.get("model"), dict) else None


def _now():
    return _time(datetime.datetime.now().timestamp())


def _time(timestamp):
    return datetime.datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")


def _suffixed(path, name):
    root, ext = os.path.splitext(path)
    return f"{root}-{name}{ext or '.json'}"
