"""COCO evaluation of a predictor over the ``DATA.VAL`` datasets: results files, AP tables, JSON."""
import json
import os

from tensorpack.utils import logger
from tqdm import tqdm

from config import config as cfg
from maskplus.data.coco import get_dataset
from maskplus.data.pipeline import get_eval_dataflow
from maskplus.engine.inference import predict_dataflow
from maskplus.evaluation.coco_eval import detections_to_coco_results, evaluate_coco, format_metrics_table


def metrics_path(results_json):
    """Where the machine-readable metrics of a results file are written."""
    root, _ = os.path.splitext(results_json)
    return root + "-metrics.json"


def run_inference(predictor, dataset_name, results_json):
    """Predict every image of a dataset and write COCO-format results to ``results_json``."""
    dataset = get_dataset(dataset_name)
    label_to_cat = dataset.label_to_category_id
    results = []
    dataflow = get_eval_dataflow(dataset_name)
    bar = tqdm(total=len(dataflow), desc=f"Inference {dataset_name}", unit="img", leave=False)

    def collect(image_id, detections):
        masks = [d.mask for d in detections] if cfg.MODE_MASK else None
        results.extend(detections_to_coco_results(
            image_id, [d.box for d in detections], [d.score for d in detections],
            [d.class_id for d in detections], masks, label_to_cat))
        bar.update(1)

    predict_dataflow(predictor, dataflow, collect)
    bar.close()
    _write_json(results_json, results)
    logger.info(f"Wrote {len(results)} detections of '{dataset_name}' to {results_json}.")
    return results


def score_results(dataset_name, results_json):
    """AP metrics of a results file against a dataset's annotations; printed and saved as JSON."""
    dataset = get_dataset(dataset_name)
    iou_types = ("bbox", "segm") if cfg.MODE_MASK else ("bbox",)
    metrics = evaluate_coco(dataset.coco, results_json, iou_types=iou_types, boundary=cfg.TRAIN.BOUNDARY_AP)
    table = format_metrics_table(metrics)
    logger.info(f"Evaluation of '{dataset_name}' ({results_json}):\n{table}")
    _write_json(metrics_path(results_json), {"dataset": dataset_name, "results": results_json, "metrics": metrics})
    return metrics


def evaluate_datasets(predictor, output, rescore_existing=True):
    """Evaluate every ``DATA.VAL`` dataset. ``output`` is the results json (suffixed per dataset
    when there are several). An existing results file is re-scored without running the model.

    Returns {dataset name: metrics}.
    """
    names = list(cfg.DATA.VAL)
    all_metrics = {}
    for name in names:
        path = output if len(names) == 1 else _suffixed(output, name)
        if not (rescore_existing and os.path.isfile(path)):
            if predictor is None:
                raise FileNotFoundError(f"Results file '{path}' does not exist and no model was given (--load).")
            run_inference(predictor, name, path)
        else:
            logger.info(f"'{path}' exists: re-scoring it without running the model.")
        all_metrics[name] = score_results(name, path)
    return all_metrics


def _suffixed(path, name):
    root, ext = os.path.splitext(path)
    return f"{root}-{name}{ext or '.json'}"


def _write_json(path, obj):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)
