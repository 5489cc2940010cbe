"""COCO-format datasets and the registry of their names (``DATA.TRAIN`` / ``DATA.VAL``).

Names are registered explicitly, as Tensorpack's example does, by the command lines
(``maskplus/cli.py``: :func:`register_datasets`) from the config:

* :func:`register_coco` ``(basedir)``: ``coco_<split>`` for every ``basedir/annotations/instances_<split>.json``
  found, with images in ``basedir/<split>/`` (e.g. ``coco_train2017``, ``coco_val2017``);
* :func:`register_dataset` ``(name, json_path, image_dir)``: one other dataset (``DATA.CUSTOM``); such
  names win over the above.

:func:`get_dataset` reads only the registry. Nothing here reads the config: what a function needs
is an argument. Records are plain dicts (see :meth:`COCOFormatDataset.training_records`). Every
problem with the data raises :class:`DatasetError` with a message naming what is missing.
"""
import contextlib
import glob
import io
import os

import numpy as np
from maskplus import compat  # noqa: F401  (first: its shims precede Tensorpack's TensorFlow)
from tensorpack.utils import logger
from maskplus.data.coco_classes import COCO_CLASS_NAMES
from maskplus.data.validate import annotation_problem

__all__ = ["DatasetError", "COCOFormatDataset", "register_coco", "register_dataset", "clear_registry",
           "available_datasets", "get_dataset", "class_names_for", "load_training_records"]

_PREFIX = "coco_"


class DatasetError(ValueError):
    """A dataset is missing, misnamed, empty or inconsistent; the message says which and where."""


class COCOFormatDataset:
    """One COCO-format json plus its image folder. The json is loaded on first use."""

    def __init__(self, name, json_path, image_dir):
        self.name = name
        self.json_path = os.path.abspath(os.path.expanduser(json_path))
        self.image_dir = os.path.abspath(os.path.expanduser(image_dir))
        if not os.path.isfile(self.json_path):
            raise DatasetError(f"Dataset '{name}': annotation file {self.json_path} does not exist.")
        if not os.path.isdir(self.image_dir):
            raise DatasetError(f"Dataset '{name}': image folder {self.image_dir} does not exist.")
        self._coco = None
        self._train_cache = {}  # (mode_mask, absolute, filter_empty, excluded ids) -> records

    def __repr__(self):
        return f"COCOFormatDataset({self.name!r}, {self.json_path!r}, {self.image_dir!r})"

    # ------------------------------------------------------------------ metadata
    @property
    def coco(self):
        """The ``pycocotools.coco.COCO`` object (loaded quietly on first access)."""
        if self._coco is None:
            from pycocotools.coco import COCO
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    self._coco = COCO(self.json_path)
            except Exception as e:  # malformed json, wrong structure
                raise DatasetError(f"Dataset '{self.name}': cannot load {self.json_path}: {e}") from e
            if not self._coco.getImgIds():
                raise DatasetError(f"Dataset '{self.name}': {self.json_path} lists zero images.")
        return self._coco

    @property
    def category_ids(self):
        """COCO category ids, sorted."""
        return sorted(self.coco.getCatIds())

    @property
    def class_names(self):
        """Category names ordered by category id (no "BG")."""
        cats = self.coco.cats
        return [cats[c]["name"] for c in self.category_ids]

    @property
    def category_id_to_label(self):
        """``{coco category id: contiguous label 1..K}``."""
        return {cid: i + 1 for i, cid in enumerate(self.category_ids)}

    @property
    def label_to_category_id(self):
        """``{contiguous label 1..K: coco category id}``."""
        return {i + 1: cid for i, cid in enumerate(self.category_ids)}

    # ------------------------------------------------------------------ records
    def _image_record(self, img):
        return {"file_name": os.path.join(self.image_dir, img["file_name"]),
                "image_id": int(img["id"]),
                "height": int(img["height"]),
                "width": int(img["width"])}

    def inference_records(self):
        """``[{"file_name", "image_id", "height", "width"}]`` for every image, sorted by id."""
        coco = self.coco
        return [self._image_record(coco.imgs[i]) for i in sorted(coco.getImgIds())]

    def training_records(self, mode_mask=True, absolute=True, filter_empty=True, excluded=()):
        """Records with annotations, for training (defaults: the example's, as the config's).

        Each is an inference record plus ``boxes`` float32 [N, 4] (absolute x1y1x2y2, clipped to
        the image), ``class`` int32 [N] (labels 1..K), ``is_crowd`` int8 [N] and, with
        ``mode_mask`` (``MODE_MASK``), ``segmentation``: per instance a list of float32 [P, 2]
        absolute polygons (an empty list for crowd instances, which never become mask targets).
        ``absolute=False`` (``DATA.ABSOLUTE_COORD``) reads boxes and polygons as fractions of
        width/height. Unusable annotations are dropped and counted; with ``filter_empty``
        (``DATA.FILTER_EMPTY_ANNOTATIONS``), images without a non-crowd instance are dropped too,
        and always the ``excluded`` image ids (those validation found unusable). A summary is
        logged once.
        """
        key = (bool(mode_mask), bool(absolute), bool(filter_empty), frozenset(excluded))
        if key not in self._train_cache:
            self._train_cache[key] = self._build_training_records(*key)
        return list(self._train_cache[key])

    def _build_training_records(self, mode_mask, absolute, filter_empty, excluded):
        coco = self.coco
        cat_to_label = self.category_id_to_label
        dropped = {}

        def drop(reason):
            dropped[reason] = dropped.get(reason, 0) + 1

        records = []
        num_empty = 0
        for img_id in sorted(coco.getImgIds()):
            if img_id in excluded:
                continue
            img = coco.imgs[img_id]
            rec = self._image_record(img)
            h, w = rec["height"], rec["width"]
            boxes, classes, crowd, segs = [], [], [], []
            for ann in coco.imgToAnns.get(img_id, []):
                problem = annotation_problem(ann, w, h, cat_to_label, mode_mask, absolute)
                if problem:
                    drop(problem)
                    continue
                x1, y1, bw, bh = np.asarray(ann["bbox"], dtype=np.float64).reshape(-1)
                x2, y2 = x1 + bw, y1 + bh
                if not absolute:
                    x1, x2, y1, y2 = x1 * w, x2 * w, y1 * h, y2 * h
                x1, x2 = np.clip([x1, x2], 0, w)
                y1, y2 = np.clip([y1, y2], 0, h)
                is_crowd = int(ann.get("iscrowd", 0)) == 1
                polys = []
                if mode_mask and not is_crowd:
                    for p in ann["segmentation"]:
                        p = np.asarray(p, dtype=np.float32).reshape(-1)
                        if p.size % 2 or p.size < 6 or not np.all(np.isfinite(p)):
                            continue
                        p = p.reshape(-1, 2).copy()
                        if not absolute:
                            p[:, 0] *= w
                            p[:, 1] *= h
                        polys.append(p)
                boxes.append([x1, y1, x2, y2])
                classes.append(cat_to_label[ann["category_id"]])
                crowd.append(1 if is_crowd else 0)
                segs.append(polys)
            rec["boxes"] = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            rec["class"] = np.asarray(classes, dtype=np.int32)
            rec["is_crowd"] = np.asarray(crowd, dtype=np.int8)
            if mode_mask:
                rec["segmentation"] = segs
            if filter_empty and not np.any(rec["is_crowd"] == 0):
                num_empty += 1
                continue
            records.append(rec)

        if dropped:
            detail = ", ".join(f"{v} {k}" for k, v in sorted(dropped.items()))
            logger.warn(f"Dataset '{self.name}': dropped {sum(dropped.values())} unusable annotations "
                        f"({detail}).")
        if num_empty:
            logger.info(f"Dataset '{self.name}': dropped {num_empty} images without a non-crowd instance "
                        f"(DATA.FILTER_EMPTY_ANNOTATIONS).")
        if not records:
            raise DatasetError(f"Dataset '{self.name}' ({self.json_path}) has zero usable training images.")
        logger.info(f"Dataset '{self.name}': {len(records)} training images, "
                    f"{sum(len(r['boxes']) for r in records)} instances.")
        #: counts of dropped annotations by reason, and of dropped images
        self.dropped_annotations = dict(dropped)
        self.dropped_images = num_empty
        return records


# ---------------------------------------------------------------------- registry
_SPLITS = {}    # coco_<split> -> (json path, image folder), from register_coco
_CUSTOM = {}    # other names -> (json path, image folder), from register_dataset
_BASEDIR = []   # the folder register_coco last searched (also when missing), for the messages
_DATASETS = {}  # (name, json path, image folder) -> COCOFormatDataset: each json is loaded once


def _basedir_splits(basedir):
    """``{split: json_path}`` for every ``annotations/instances_<split>.json`` under ``basedir``."""
    out = {}
    for path in sorted(glob.glob(os.path.join(basedir, "annotations", "instances_*.json"))):
        split = os.path.basename(path)[len("instances_"):-len(".json")]
        out[split] = path
    return out


def register_coco(basedir):
    """Register ``coco_<split>`` for every ``basedir/annotations/instances_<split>.json`` (images in
    ``basedir/<split>/``), replacing the ``coco_*`` names of an earlier call. A missing ``basedir``
    registers nothing but is remembered, so that a lookup can say it does not exist."""
    basedir = os.path.expanduser(basedir)
    _BASEDIR[:] = [basedir]
    _SPLITS.clear()
    if os.path.isdir(basedir):
        for split, json_path in _basedir_splits(basedir).items():
            _SPLITS[_PREFIX + split] = (json_path, os.path.join(basedir, split))


def register_dataset(name, json_path, image_dir):
    """Register ``name`` as the COCO-format ``json_path`` with its ``image_dir`` (``DATA.CUSTOM``);
    it wins over a ``coco_<split>`` of the same name."""
    _CUSTOM[name] = (str(json_path), str(image_dir))


def clear_registry():
    """Forget every registered name (the loaded datasets stay cached by their files)."""
    _SPLITS.clear()
    _CUSTOM.clear()
    _BASEDIR.clear()


def available_datasets():
    """Every registered name: ``coco_<split>`` found by :func:`register_coco` and the others."""
    return sorted(set(_SPLITS) | set(_CUSTOM))


def _resolve(name):
    if name in _CUSTOM:
        return _CUSTOM[name]
    if name in _SPLITS:
        return _SPLITS[name]
    basedir = _BASEDIR[0] if _BASEDIR else None
    if basedir is not None and not os.path.isdir(basedir):
        raise DatasetError(
            f"Dataset '{name}': DATA.BASEDIR {basedir} does not exist. Set DATA.BASEDIR to the folder "
            f"holding annotations/instances_<split>.json and <split>/, or register it in DATA.CUSTOM.")
    if basedir is not None and name.startswith(_PREFIX):
        split = name[len(_PREFIX):]
        image_dir = os.path.join(basedir, split)
        if split and os.path.isdir(image_dir):
            raise DatasetError(f"Dataset '{name}': image folder {image_dir} exists but the annotation "
                               f"file {os.path.join(basedir, 'annotations', f'instances_{split}.json')} is missing.")
    avail = available_datasets()
    searched = (f"searched {os.path.join(basedir, 'annotations', 'instances_*.json')} and DATA.CUSTOM"
                if basedir is not None else "no DATA.BASEDIR was registered; searched DATA.CUSTOM")
    raise DatasetError(f"Unknown dataset '{name}'. Available: {', '.join(avail) if avail else 'none'} ({searched}).")


def get_dataset(name):
    """The :class:`COCOFormatDataset` registered as ``name`` (cached per json/image folder)."""
    json_path, image_dir = _resolve(name)
    key = (name, os.path.abspath(os.path.expanduser(json_path)), os.path.abspath(os.path.expanduser(image_dir)))
    if key not in _DATASETS:
        _DATASETS[key] = COCOFormatDataset(name, json_path, image_dir)
    return _DATASETS[key]


def _names(names):
    if isinstance(names, str):
        return [names]
    names = list(names)
    if not names:
        raise DatasetError("No dataset names given.")
    return names


def _coco_json_missing(name):
    """A ``coco_<split>`` name that is registered neither as a split found on disk nor otherwise."""
    return name.startswith(_PREFIX) and name not in _CUSTOM and name not in _SPLITS


def class_names_for(names):
    """Category names (ordered by category id, no "BG") shared by all the named datasets.

    As in the Tensorpack example, ``coco_*`` names whose files are not on disk stand for COCO's
    80 classes, so a model-zoo model predicts without any dataset or class-name setting."""
    names = _names(names)
    if all(_coco_json_missing(n) for n in names):
        logger.info(f"No annotation file for {', '.join(names)} under DATA.BASEDIR: using COCO's 80 class names.")
        return list(COCO_CLASS_NAMES)
    first = get_dataset(names[0])
    ref = list(zip(first.category_ids, first.class_names))
    for other_name in names[1:]:
        other = get_dataset(other_name)
        cats = list(zip(other.category_ids, other.class_names))
        if cats != ref:
            only_first = sorted(set(ref) - set(cats))[:5]
            only_other = sorted(set(cats) - set(ref))[:5]
            raise DatasetError(
                f"Datasets '{first.name}' and '{other.name}' have different categories "
                f"({len(ref)} vs {len(cats)} (id, name) pairs; only in '{first.name}': {only_first}, "
                f"only in '{other.name}': {only_other}). Datasets trained or evaluated together "
                f"must share their category list.")
    return [n for _, n in ref]


def load_training_records(names, mode_mask=True, absolute=True, filter_empty=True, excluded=None):
    """Training records of every named dataset, concatenated (categories must agree); see
    :meth:`COCOFormatDataset.training_records`. ``excluded``: ``{dataset name: image ids}`` to
    leave out (what validation found unusable)."""
    names = _names(names)
    class_names_for(names)
    excluded = excluded or {}
    out = []
    for n in names:
        out.extend(get_dataset(n).training_records(mode_mask, absolute, filter_empty, excluded.get(n, ())))
    return out
