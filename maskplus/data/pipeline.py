"""Tensorpack DataFlows for training and evaluation.

Training datapoints are dicts whose keys are exactly the model's input names
(``ResNetFPNModel.inputs()``); Tensorpack 0.11's ``QueueInput``/``FeedInput`` feed a dict
datapoint by looking up each placeholder's op name, and require the same number of entries.

Reproducibility: the source dataflow draws, for each record, a 32-bit seed from a RandomState
seeded by ``DATA.SEED`` (when >= 0); all augmentation randomness and anchor sampling of that
datapoint comes from ``RandomState(that seed)``. So results do not depend on which worker process
maps a record (the order in which workers return datapoints may still vary when
``DATA.NUM_WORKERS > 0``).
"""
import warnings

import cv2
import numpy as np
from tensorpack.dataflow import DataFlow, MapData, MultiProcessMapData
from tensorpack.utils import logger

from maskplus.data import transforms as T
from maskplus.data.anchors import c4_anchor_targets, multilevel_anchor_targets
from maskplus.data.coco import DatasetError, get_dataset, load_training_records
from maskplus.data.image_io import read_image

__all__ = ["TrainingMapper", "SeededRecords", "get_train_dataflow", "get_eval_dataflow",
           "polygons_to_mask", "train_input_names"]


def _cfg():
    from config import config
    return config


def train_input_names(cfg=None):
    """The keys of a training datapoint, in the model's input order."""
    cfg = cfg or _cfg()
    names = ["image"]
    if cfg.MODE_FPN:
        for lvl in range(2, 2 + len(cfg.FPN.ANCHOR_STRIDES)):
            names += [f"anchor_labels_lvl{lvl}", f"anchor_boxes_lvl{lvl}"]
    else:
        names += ["anchor_labels", "anchor_boxes"]  # the single C4 level
    names += ["gt_boxes", "gt_labels"]
    if cfg.MODE_MASK:
        names.append("gt_masks_packed")
    names.append("image_id")  # not used by the graph: lets a failing step name its image
    return names


def polygons_to_mask(polygons, height, width):
    """uint8 ``height x width`` binary mask of the union of P x 2 polygons (pycocotools raster)."""
    from pycocotools import mask as mask_util
    flat = [np.asarray(p, dtype=np.float64).reshape(-1) for p in polygons]
    flat = [p.tolist() for p in flat if p.size >= 6]
    if not flat:
        return np.zeros((height, width), dtype=np.uint8)
    rles = mask_util.frPyObjects(flat, height, width)
    with warnings.catch_warnings():  # pycocotools' NumPy-2 copy=False deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_util.decode(mask_util.merge(rles)).astype(np.uint8)


class SeededRecords(DataFlow):
    """Yields ``(record, seed)`` over a list of records, reshuffled every epoch.

    With ``seed >= 0`` the order and the per-record seeds are reproducible.
    """

    def __init__(self, records, shuffle=True, seed=-1):
        self.records = records
        self.shuffle = shuffle
        self.seed = seed
        self.rng = None

    def __len__(self):
        return len(self.records)

    def reset_state(self):
        self.rng = np.random.RandomState(self.seed if self.seed >= 0 else None)

    def __iter__(self):
        if self.rng is None:
            self.reset_state()
        order = self.rng.permutation(len(self.records)) if self.shuffle else np.arange(len(self.records))
        seeds = self.rng.randint(0, 2 ** 31 - 1, size=len(order))
        for i, s in zip(order, seeds):
            yield self.records[int(i)], int(s)


class TrainingMapper:
    """``(record, seed) -> datapoint dict`` or ``None`` (skipped). Picklable; reads the config
    values it needs at construction, so worker processes need no config of their own."""

    def __init__(self, cfg=None):
        cfg = cfg or _cfg()
        self.short_range = [int(x) for x in cfg.PREPROC.TRAIN_SHORT_EDGE_SIZE]
        self.max_size = float(cfg.PREPROC.MAX_SIZE)
        self.mode_mask = bool(cfg.MODE_MASK)
        self.keep_empty = not cfg.DATA.FILTER_EMPTY_ANNOTATIONS
        self.anchor_cfg = _AnchorCfg(cfg)
        self.input_names = train_input_names(cfg)
        self.num_unreadable = 0

    def __call__(self, dp):
        record, seed = dp
        rng = np.random.RandomState(seed)
        img = read_image(record["file_name"], (record["width"], record["height"]))
        if img is None:
            self.num_unreadable += 1
            logger.warn(f"Cannot read image {record['file_name']}; skipped "
                        f"({self.num_unreadable} unreadable so far in this process).")
            return None
        h0, w0 = img.shape[:2]
        short = rng.randint(self.short_range[0], self.short_range[1] + 1)
        # as the example: float32 before resizing, so the interpolated values are not rounded to uint8
        img, sy, sx = T.resize_image(img.astype(np.float32), short, self.max_size)
        h, w = img.shape[:2]
        # the record's size may disagree with the file; scale from the file's real size
        if (h0, w0) != (record["height"], record["width"]):
            sy0, sx0 = h0 / float(record["height"]), w0 / float(record["width"])
        else:
            sy0 = sx0 = 1.0
        boxes = T.scale_boxes(record["boxes"], sy * sy0, sx * sx0)
        polys = None
        if self.mode_mask:
            polys = [T.scale_polygons(p, sy * sy0, sx * sx0) for p in record["segmentation"]]
        if rng.uniform() < 0.5:
            img = img[:, ::-1]
            boxes = T.flip_boxes(boxes, w)
            if polys is not None:
                polys = [T.flip_polygons(p, w) for p in polys]
        boxes = T.clip_boxes(boxes, h, w)

        is_crowd = np.asarray(record["is_crowd"]) == 1
        valid = (~is_crowd) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        keep = np.flatnonzero(valid)
        if len(keep) == 0 and not self.keep_empty:
            return None
        gt_boxes = boxes[keep]
        crowd_boxes = boxes[is_crowd]

        ret = {"image": np.ascontiguousarray(img, dtype=np.float32)}
        if self.anchor_cfg.MODE_FPN:
            targets = multilevel_anchor_targets(h, w, gt_boxes, crowd_boxes, rng, self.anchor_cfg)
            for lvl, (labels, anchor_boxes) in enumerate(targets, start=2):
                ret[f"anchor_labels_lvl{lvl}"] = labels
                ret[f"anchor_boxes_lvl{lvl}"] = anchor_boxes
        else:
            ret["anchor_labels"], ret["anchor_boxes"] = c4_anchor_targets(
                h, w, gt_boxes, crowd_boxes, rng, self.anchor_cfg)
        ret["gt_boxes"] = gt_boxes.astype(np.float32)
        ret["gt_labels"] = np.asarray(record["class"])[keep].astype(np.int64)
        if self.mode_mask:
            masks = [polygons_to_mask(polys[i], h, w) for i in keep]
            masks = np.stack(masks, axis=0) if masks else np.zeros((0, h, w), np.uint8)
            ret["gt_masks_packed"] = np.packbits(masks, axis=-1)
        ret["image_id"] = np.int64(record["image_id"])
        assert set(ret) == set(self.input_names), (sorted(ret), self.input_names)
        return {k: ret[k] for k in self.input_names}


class _Node:
    pass


class _AnchorCfg:
    """A picklable snapshot of the config keys anchor targets need (same attribute paths)."""

    def __init__(self, cfg):
        self.MODE_FPN = bool(cfg.MODE_FPN)
        self.FPN = _Node()
        self.FPN.ANCHOR_STRIDES = tuple(cfg.FPN.ANCHOR_STRIDES)
        self.RPN = _Node()
        self.RPN.ANCHOR_STRIDE = int(cfg.RPN.ANCHOR_STRIDE)
        for k in ("ANCHOR_SIZES", "ANCHOR_RATIOS"):
            setattr(self.RPN, k, tuple(getattr(cfg.RPN, k)))
        for k in ("POSITIVE_ANCHOR_THRESH", "NEGATIVE_ANCHOR_THRESH", "FG_RATIO", "CROWD_OVERLAP_THRESH"):
            setattr(self.RPN, k, float(getattr(cfg.RPN, k)))
        self.RPN.BATCH_PER_IM = int(cfg.RPN.BATCH_PER_IM)


def get_train_dataflow():
    """An infinite-epoch DataFlow of training dicts (see module doc) over ``DATA.TRAIN``.

    Keys: ``image`` float32 [H, W, 3] BGR (unpadded), ``anchor_labels_lvl{2..6}`` int32
    [fh, fw, A], ``anchor_boxes_lvl{2..6}`` float32 [fh, fw, A, 4] (field sizes of the image padded
    to a multiple of ``FPN.ANCHOR_STRIDES[3]``; C4 models instead: ``anchor_labels``,
    ``anchor_boxes`` on the H//16 x W//16 map), ``gt_boxes`` float32 [N, 4], ``gt_labels`` int64 [N]
    and, with ``MODE_MASK``, ``gt_masks_packed`` uint8 [N, H, ceil(W/8)] (``np.packbits`` on axis -1).
    Unreadable images are skipped, and so are images left without a box unless
    ``DATA.FILTER_EMPTY_ANNOTATIONS=False`` (then they train as all-negative, as in the example).
    """
    cfg = _cfg()
    records = load_training_records(cfg.DATA.TRAIN)
    logger.info(f"Training dataflow: {len(records)} images from {', '.join(cfg.DATA.TRAIN)}.")
    ds = SeededRecords(records, shuffle=True, seed=int(cfg.DATA.SEED))
    mapper = TrainingMapper(cfg)
    workers = int(cfg.DATA.NUM_WORKERS)
    if workers > 0:
        ds = MultiProcessMapData(ds, num_proc=workers, map_func=mapper,
                                 buffer_size=min(len(records), 64))
    else:
        ds = MapData(ds, mapper)
    return ds


def _shard(n, shard, num_shards):
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not in [0, {num_shards}).")
    per = n // num_shards
    start = shard * per
    end = n if shard == num_shards - 1 else start + per
    return start, end


class _EvalImages(DataFlow):
    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        for r in self.records:
            img = read_image(r["file_name"], (r["width"], r["height"]))
            if img is None:
                raise DatasetError(f"Cannot read image {r['file_name']} (image_id {r['image_id']}).")
            yield img, r["image_id"]


def get_eval_dataflow(name, shard=0, num_shards=1):
    """DataFlow of ``(BGR uint8 image, image_id)`` over a contiguous shard of ``name``'s images
    (sorted by id; the last shard takes the remainder). An unreadable image raises DatasetError."""
    records = get_dataset(name).inference_records()
    start, end = _shard(len(records), shard, num_shards)
    return _EvalImages(records[start:end])
