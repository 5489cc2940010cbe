"""Tensorpack DataFlows for training and evaluation.

Training datapoints are dicts whose keys are exactly the model's input names
(``ResNetFPNModel.inputs()``); Tensorpack 0.11's ``QueueInput``/``FeedInput`` feed a dict
datapoint by looking up each placeholder's op name, and require the same number of entries.

Loader faults: a record whose mapping fails (an image that cannot be read or has vanished, one
that cannot be resized or augmented) becomes a skip marker instead of killing its loader process;
the training process names it, leaves it out of the rest of the run, and stops the run (via
:class:`LoaderFaults`, which the trainer watches) once more images failed than
``DATA.LOADER_MAX_SKIPPED`` allows. Loader processes die with the training process, however it
ends (a parent-death signal).

Reproducibility: the source dataflow draws, for each record, a 32-bit seed from a RandomState
seeded by ``DATA.SEED`` (when >= 0); all augmentation randomness and anchor sampling of that
datapoint comes from ``RandomState(that seed)``. So results do not depend on which worker process
maps a record. Tensorpack's loader processes return datapoints as they finish them, in an order
that varies from run to run; with ``ordered`` (``TRAIN.DETERMINISTIC``) :class:`OrderedLoaderProcesses`
take their place and deliver the source's order. Horovod ranks seed their records from
``DATA.SEED`` and their rank (:func:`rank_seed`), so that they read different images.
"""
import math
import multiprocessing
import os
import queue
import signal
import warnings

import cv2
import numpy as np
from maskplus import compat  # noqa: F401  (first: its shims precede Tensorpack's TensorFlow)
from tensorpack.dataflow import DataFlow, MapData, ProxyDataFlow
from tensorpack.dataflow.base import DataFlowTerminated
from tensorpack.dataflow.parallel_map import MultiProcessMapDataZMQ
from tensorpack.utils import logger

from maskplus.console import one_line
from maskplus.parent_death import die_with_parent

from maskplus.data import transforms as T
from maskplus.data.anchors import AnchorParams, c4_anchor_targets, multilevel_anchor_targets
from maskplus.data.coco import DatasetError, get_dataset
from maskplus.data.image_io import read_image

__all__ = ["TrainingMapper", "SeededRecords", "LoaderFaults", "LoaderFaultError", "get_train_dataflow",
           "get_eval_dataflow", "polygons_to_mask", "train_input_names", "rank_seed", "OrderedLoaderProcesses"]

#: the key of the marker a mapper returns for a record it could not map: (file name, image id, reason)
SKIPPED = "__loader_skipped__"


def train_input_names(anchors, mode_mask):
    """The keys of a training datapoint, in the model's input order, for the anchor levels of
    ``anchors`` (an :class:`AnchorParams`) and, with ``mode_mask``, the masks."""
    names = ["image"]
    if anchors.fpn:
        for lvl in range(2, 2 + len(anchors.strides)):
            names += [f"anchor_labels_lvl{lvl}", f"anchor_boxes_lvl{lvl}"]
    else:
        names += ["anchor_labels", "anchor_boxes"]  # the single C4 level
    names += ["gt_boxes", "gt_labels"]
    if mode_mask:
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

    With ``seed >= 0`` the order and the per-record seeds are reproducible. Records whose
    ``(file_name, image_id)`` is in ``excluded`` (a live container: the loader's skips) are left
    out; they still draw their seeds, so the others keep theirs.
    """

    def __init__(self, records, shuffle=True, seed=-1, excluded=()):
        self.records = records
        self.shuffle = shuffle
        self.seed = seed
        self.excluded = excluded
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
            record = self.records[int(i)]
            if (record["file_name"], record["image_id"]) not in self.excluded:
                yield record, int(s)


def rank_seed(seed, rank):
    """The data seed of a Horovod rank: ``seed`` itself for rank 0 (and for an unseeded run, -1),
    another for each other rank, so that ranks sharing ``DATA.SEED`` read different images."""
    if seed < 0 or rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def skipped(record, reason):
    """The marker a mapper returns instead of a datapoint when ``record`` cannot be used."""
    return {SKIPPED: (record["file_name"], int(record["image_id"]), reason)}


class TrainingMapper:
    """``(record, seed) -> datapoint dict``, ``None`` (no usable box left: skipped, as in the
    example) or a :func:`skipped` marker (the record failed: unreadable image, resize error...).
    Never raises, so that a loader process survives any record. Picklable: worker processes need
    no config of their own.

    Args:
        anchors: an :class:`AnchorParams` (the RPN targets' levels and rules).
        short_edge_range: ``[min, max]`` short edge, sampled per image (``PREPROC.TRAIN_SHORT_EDGE_SIZE``).
        max_size: the cap of the long edge (``PREPROC.MAX_SIZE``, as finalised).
        mode_mask: produce mask targets (``MODE_MASK``).
        keep_empty: an image left without a box trains as all-negative instead of being skipped
            (``not DATA.FILTER_EMPTY_ANNOTATIONS``).
    """

    def __init__(self, anchors, short_edge_range, max_size, mode_mask=True, keep_empty=False):
        self.short_range = [int(x) for x in short_edge_range]
        self.max_size = float(max_size)
        self.mode_mask = bool(mode_mask)
        self.keep_empty = bool(keep_empty)
        self.anchors = anchors
        self.input_names = train_input_names(anchors, self.mode_mask)

    @classmethod
    def from_config(cls, cfg):
        """The mapper of a finalised config ``cfg`` (an argument: the data layer never imports it)."""
        return cls(AnchorParams.from_config(cfg), cfg.PREPROC.TRAIN_SHORT_EDGE_SIZE, cfg.PREPROC.MAX_SIZE,
                   mode_mask=cfg.MODE_MASK, keep_empty=not cfg.DATA.FILTER_EMPTY_ANNOTATIONS)

    def __call__(self, dp):
        try:
            return self.map(dp)
        except Exception as e:  # cv2.error, MemoryError, a file vanishing mid-read, ...
            return skipped(dp[0], one_line(e, kind=True))

    def map(self, dp):
        record, seed = dp
        rng = np.random.RandomState(seed)
        img = read_image(record["file_name"], (record["width"], record["height"]))
        if img is None:
            return skipped(record, "the file is missing or is not a readable image")
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
        if self.anchors.fpn:
            targets = multilevel_anchor_targets(h, w, gt_boxes, crowd_boxes, rng, self.anchors)
            for lvl, (labels, anchor_boxes) in enumerate(targets, start=2):
                ret[f"anchor_labels_lvl{lvl}"] = labels
                ret[f"anchor_boxes_lvl{lvl}"] = anchor_boxes
        else:
            ret["anchor_labels"], ret["anchor_boxes"] = c4_anchor_targets(
                h, w, gt_boxes, crowd_boxes, rng, self.anchors)
        ret["gt_boxes"] = gt_boxes.astype(np.float32)
        ret["gt_labels"] = np.asarray(record["class"])[keep].astype(np.int64)
        if self.mode_mask:
            masks = [polygons_to_mask(polys[i], h, w) for i in keep]
            masks = np.stack(masks, axis=0) if masks else np.zeros((0, h, w), np.uint8)
            ret["gt_masks_packed"] = np.packbits(masks, axis=-1)
        ret["image_id"] = np.int64(record["image_id"])
        assert set(ret) == set(self.input_names), (sorted(ret), self.input_names)
        return {k: ret[k] for k in self.input_names}


class LoaderFaultError(DatasetError):
    """Too many training images failed in the data loader, or a loader process died."""


class LoaderFaults:
    """The images the data loader failed on during a run: named once each (and left out of the
    rest of the run), counted, and turned into an error once there are more than ``ceil(max_fraction
    * num_images)`` of them (never all images: a run must have something to train on). Shared by
    the dataflow's thread, which records, and the trainer, which stops on :attr:`error`."""

    def __init__(self, max_fraction, num_images=0):
        self.max_fraction = max_fraction
        self.skipped = {}  # (file name, image id) -> reason, in order of failure
        self.error = None
        self.set_num_images(num_images)

    def set_num_images(self, num_images):
        self.num_images = num_images
        # rounded first: 0.01 * 300 is 3.0000000000000004 in floating point, which must allow 3
        self.allowed = max(0, min(num_images - 1, math.ceil(round(self.max_fraction * num_images, 6))))

    def listing(self, limit=20):
        lines = [f"{path} (image id {i}): {reason}" for (path, i), reason in list(self.skipped.items())[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"... and {len(self.skipped) - limit} more (all of them in the log)")
        return lines

    def record(self, path, image_id, reason):
        """Count a failed image (once); True while the run may go on."""
        if (path, image_id) in self.skipped:  # in flight twice (a buffer spanning two epochs)
            return self.error is None
        self.skipped[(path, image_id)] = reason
        n = len(self.skipped)
        logger.warn(f"Data loader: skipped {path} (image id {image_id}): {reason}. It is left out of the rest of "
                    f"the run ({n} skipped, {self.allowed} allowed by DATA.LOADER_MAX_SKIPPED={self.max_fraction:g} "
                    f"of {self.num_images} images).")
        if n > self.allowed and self.error is None:
            self.fail(f"The data loader could not use {n} of the {self.num_images} training images, more than "
                      f"DATA.LOADER_MAX_SKIPPED={self.max_fraction:g} allows ({self.allowed}):\n  "
                      + "\n  ".join(self.listing()))
        return self.error is None

    def fail(self, message):
        if self.error is None:
            self.error = message
            logger.error(message)


class SkipFailedRecords(ProxyDataFlow):
    """Drops the mapper's :func:`skipped` markers after recording them in ``faults``; ends the
    dataflow (Tensorpack then closes the training queue) once ``faults`` has an error."""

    def __init__(self, ds, faults):
        super().__init__(ds)
        self.faults = faults

    def __iter__(self):
        for dp in self.ds:
            if isinstance(dp, dict) and SKIPPED in dp:
                if not self.faults.record(*dp[SKIPPED]):
                    raise DataFlowTerminated()
                continue
            yield dp


class _LoaderProcess(MultiProcessMapDataZMQ._Worker):
    """A loader process that is killed when the training process ends, however it ends (Tensorpack
    asks for that through python-prctl, which is not a dependency)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.trainer_pid = os.getpid()

    def run(self):
        _become_loader_process(self.trainer_pid)
        super().run()


def _become_loader_process(trainer_pid):
    die_with_parent(trainer_pid)
    # the trainer's signal handling is not ours: Tensorpack ends us with SIGTERM, and Ctrl-C
    # (sent to the whole process group) is the trainer's to handle
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # forked from another thread than the main one: none was inherited
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fail_if_dead(processes, faults):
    dead = [p for p in processes if not p.is_alive()]
    if dead:
        codes = ", ".join(f"pid {p.pid}: exit code {p.exitcode}" for p in dead)
        faults.fail(f"{len(dead)} data-loading process(es) died ({codes}; a negative code is the "
                    f"signal that killed it, -9 often the out-of-memory killer). Rerun the same "
                    f"command to resume, with fewer DATA.NUM_WORKERS if memory is short.")
        raise DataFlowTerminated()


class LoaderProcesses(MultiProcessMapDataZMQ):
    """Tensorpack's multi-process map whose processes die with the trainer, and which reports a
    process that died (killed by the OOM killer, a crash in native code) instead of waiting
    forever for its datapoints."""

    POLL_SECONDS = 5

    def __init__(self, ds, num_proc, map_func, buffer_size, faults):
        super().__init__(ds, num_proc=num_proc, map_func=map_func, buffer_size=buffer_size)
        self.faults = faults

    def _create_worker(self, id, pipename, hwm):
        return _LoaderProcess(id, self.map_func, pipename, hwm)

    def _recv(self):
        while not self.socket.poll(1000 * self.POLL_SECONDS):
            _fail_if_dead(self._procs, self.faults)
        return super()._recv()


def _map_in_order(map_func, tasks, results, trainer_pid):
    _become_loader_process(trainer_pid)
    while True:
        results.put(map_func(tasks.get()))


class OrderedLoaderProcesses(ProxyDataFlow):
    """Loader processes that deliver the datapoints of ``ds`` (repeated for ever) in its order,
    whatever order they finish in: the k-th goes to process k mod n, which answers on a queue of
    its own in the order it was asked, and the k-th answer is read from that queue.
    ``buffer_size`` datapoints are in flight. (Tensorpack's processes answer through one socket in
    the order they finish; their sockets also dropped an answer now and then, unnoticed there.)
    Processes die with the trainer; one that dies is reported through ``faults``."""

    POLL_SECONDS = 5

    def __init__(self, ds, num_proc, map_func, buffer_size, faults):
        super().__init__(ds)
        self.num_proc, self.map_func, self.buffer_size, self.faults = int(num_proc), map_func, int(buffer_size), faults
        self._procs = []

    def reset_state(self):
        super().reset_state()
        self.close()
        context = multiprocessing.get_context("fork")
        self._tasks = [context.Queue() for _ in range(self.num_proc)]
        self._results = [context.Queue() for _ in range(self.num_proc)]
        self._procs = [context.Process(target=_map_in_order, args=(self.map_func, t, r, os.getpid()), daemon=True)
                       for t, r in zip(self._tasks, self._results)]
        for p in self._procs:
            p.start()
        self._source = self._forever()
        self._sent = self._received = 0
        for _ in range(self.buffer_size):
            self._send()

    def _forever(self):
        while True:
            before = self._sent
            yield from self.ds
            if self._sent == before:  # a pass without a datapoint: every record left out
                return

    def _send(self):
        dp = next(self._source, None)
        if dp is not None:
            self._tasks[self._sent % self.num_proc].put(dp)
            self._sent += 1

    def __iter__(self):
        while self._received < self._sent:
            answers = self._results[self._received % self.num_proc]
            while True:
                try:
                    dp = answers.get(timeout=self.POLL_SECONDS)
                    break
                except queue.Empty:
                    _fail_if_dead(self._procs, self.faults)
            self._received += 1
            self._send()
            if dp is not None:
                yield dp

    def close(self):
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        self._procs = []

    def __del__(self):
        self.close()


def get_train_dataflow(records, mapper, faults, seed=-1, num_workers=0, ordered=False):
    """An infinite-epoch DataFlow of training dicts (see module doc) over ``records`` (from
    :func:`maskplus.data.coco.load_training_records`), mapped by ``mapper`` (a :class:`TrainingMapper`).

    Keys: ``image`` float32 [H, W, 3] BGR (unpadded), ``anchor_labels_lvl{2..6}`` int32
    [fh, fw, A], ``anchor_boxes_lvl{2..6}`` float32 [fh, fw, A, 4] (field sizes of the image padded
    to a multiple of ``FPN.ANCHOR_STRIDES[3]``; C4 models instead: ``anchor_labels``,
    ``anchor_boxes`` on the H//16 x W//16 map), ``gt_boxes`` float32 [N, 4], ``gt_labels`` int64 [N]
    and, with ``MODE_MASK``, ``gt_masks_packed`` uint8 [N, H, ceil(W/8)] (``np.packbits`` on axis -1).
    Images that fail in the mapper are recorded in ``faults`` (a :class:`LoaderFaults`) and
    skipped; so are images left without a box unless the mapper keeps them (then they train as
    all-negative, as in the example). ``seed >= 0`` (``DATA.SEED``) makes the order and the
    augmentation reproducible; ``num_workers`` (``DATA.NUM_WORKERS``) loader processes map the
    records (0: in this process), delivering them in the records' order if ``ordered``.
    """
    faults.set_num_images(len(records))
    ds = SeededRecords(records, shuffle=True, seed=int(seed), excluded=faults.skipped)
    workers = int(num_workers)
    if workers > 0:
        loader = OrderedLoaderProcesses if ordered else LoaderProcesses
        ds = loader(ds, workers, mapper, min(len(records), 64), faults)
    else:
        ds = MapData(ds, mapper)
    return SkipFailedRecords(ds, faults)


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
