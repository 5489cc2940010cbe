"""TRAIN.DETERMINISTIC's data side: loader processes that finish out of order still deliver the
records' order, and Horovod ranks sharing DATA.SEED read different images."""
import itertools
import time

import numpy as np

from maskplus.data import pipeline


class SlowFirstMapper:
    """Takes ``delay`` seconds for every third record, so that of several loader processes the later
    ones finish first; returns the record's id and its seed (what augmentation would draw from),
    None (a record without a usable box, left out) for id 7."""

    def __init__(self, delay=0.05):
        self.delay = delay

    def __call__(self, dp):
        record, seed = dp
        time.sleep(self.delay if record["image_id"] % 3 == 0 else 0.0)
        if record["image_id"] == 7:
            return None
        return {"image_id": record["image_id"], "seed": seed}


def _records(n=12):
    return [{"file_name": f"{i}.jpg", "image_id": i} for i in range(n)]


def _first(ds, n):
    """The first n datapoints, passes repeated as the trainer's queue repeats them (in the training
    process a pass is one epoch; loader processes never end theirs)."""
    def forever():
        while True:
            yield from ds
    ds.reset_state()
    return [(dp["image_id"], dp["seed"]) for dp in itertools.islice(forever(), n)]


def test_ordered_loader_processes_deliver_the_in_process_order_over_epochs():
    # 30 epochs of 11 usable records, each reshuffled: with Tensorpack's high-water mark the
    # processes lost a datapoint within a few hundred (and the ordered loader waited for it)
    expected = _first(pipeline.get_train_dataflow(_records(), SlowFirstMapper(), pipeline.LoaderFaults(0.5), seed=4), 330)
    assert 7 not in [i for i, _ in expected] and sorted(i for i, _ in expected[:11]) == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11]
    assert expected[:11] != expected[11:22]
    ordered = pipeline.get_train_dataflow(_records(), SlowFirstMapper(), pipeline.LoaderFaults(0.5), seed=4,
                                          num_workers=3, ordered=True)
    assert _first(ordered, 330) == expected


def test_unordered_loader_processes_return_what_finishes_first():
    # the control: the same processes without ordering deliver another order (not on every
    # datapoint: until all have connected, Tensorpack sends every request to the first one)
    unordered = pipeline.get_train_dataflow(_records(), SlowFirstMapper(), pipeline.LoaderFaults(0.5), seed=4,
                                            num_workers=3)
    expected = _first(pipeline.get_train_dataflow(_records(), SlowFirstMapper(), pipeline.LoaderFaults(0.5), seed=4), 110)
    assert _first(unordered, 110) != expected


def test_each_horovod_rank_reads_another_order_from_one_data_seed():
    orders = {rank: [i for i, _ in _first(pipeline.get_train_dataflow(
        _records(), SlowFirstMapper(), pipeline.LoaderFaults(0.5), seed=pipeline.rank_seed(4, rank)), 11)]
        for rank in range(4)}
    assert pipeline.rank_seed(4, 0) == 4 and pipeline.rank_seed(-1, 3) == -1  # rank 0 and unseeded runs unchanged
    assert len({tuple(o) for o in orders.values()}) == 4
    assert pipeline.rank_seed(4, 1) == pipeline.rank_seed(4, 1) != pipeline.rank_seed(5, 1)
    assert all(0 <= pipeline.rank_seed(s, r) < 2 ** 32 for s in (0, 2 ** 32 - 1) for r in (1, 7))
    assert np.random.RandomState(pipeline.rank_seed(2 ** 32 - 1, 7)).randint(10) >= 0  # a valid RandomState seed
