"""Training tuples (q, {p_i}, {n_j}) from GPS alone (paper Sec. 4).

* Potential positives of a query: database images farther than
  ``pos_min_dist`` (1 m) and within ``pos_radius`` (authors: 1 m < d <=
  ``sqrt(nonTrivPosDistSqThr)`` = 10 m), and, where the dataset has capture
  times (Tokyo Time Machine), from another time than the query. Which of
  them really shows the query's place is unknown; the loss uses the closest
  in feature space.
* Negatives: database images farther than ``neg_radius`` (authors:
  ``posDistThr`` = 25 m). Only the (small) complement is stored; negatives
  are drawn from outside it by :func:`repro.data.ground_truth.sample_negatives`.

A query with no potential positive or no negative cannot form a tuple. The
authors skip such queries inside the batch loop (``if isempty(potPosIDs),
continue``), so some of their batches hold fewer than 4 tuples; here they are
removed once, before training, so every batch has ``batch_size`` queries, and
their number is reported. A split without a single usable query is an error
raised before any training work starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from repro.data.datasets import PlaceSplit
from repro.data.ground_truth import non_negatives, train_positives
from repro.errors import ConfigError, DatasetError


@dataclass
class TrainingTuples:
    """Which queries train, with their potential positives and non-negatives.

    query_ids: sorted int64 indices (into the split's queries) of usable queries.
    potential_positives, non_negatives: one sorted int64 array per split query.
    num_db: database size N.
    pos_radius, neg_radius, pos_min_dist: metres.
    time_rule: positives were restricted to other capture times (TokyoTM).
    num_without_positive, num_without_negative: queries dropped for each reason.
    """

    query_ids: np.ndarray
    potential_positives: list[np.ndarray]
    non_negatives: list[np.ndarray]
    num_db: int
    pos_radius: float
    neg_radius: float
    num_without_positive: int
    num_without_negative: int
    pos_min_dist: float = 1.0
    time_rule: bool = False

    def summary(self) -> dict:
        return {
            "num_training_queries": int(len(self.query_ids)),
            "num_without_positive": self.num_without_positive,
            "num_without_negative": self.num_without_negative,
            "pos_radius_m": self.pos_radius,
            "neg_radius_m": self.neg_radius,
            "pos_min_dist_m": self.pos_min_dist,
            "positives_from_another_time": self.time_rule,
            "mean_potential_positives": float(np.mean([len(self.potential_positives[q]) for q in self.query_ids])),
        }


def build_tuples(split: PlaceSplit, pos_radius: float | None = None,
                 neg_radius: float | None = None, pos_min_dist: float = 1.0) -> TrainingTuples:
    """The training tuples of ``split``; DatasetError if no query can train.

    Radii default to the split's dbStruct thresholds (10 m and 25 m);
    ``pos_min_dist`` (metres, exclusive) is the authors' 1 m.
    """
    if split.utm_db is None or split.utm_q is None:
        raise ConfigError(f"{split.name}: training needs GPS positions of database and query images")
    db = split.dbstruct
    if pos_radius is None:
        pos_radius = math.sqrt(db.non_triv_pos_dist_sq_thr) if db is not None else 10.0
    if neg_radius is None:
        neg_radius = float(db.pos_dist_thr) if db is not None else 25.0
    if pos_radius > neg_radius:
        raise ConfigError(f"pos_radius {pos_radius} m exceeds neg_radius {neg_radius} m: a potential positive "
                          "could also be a negative")
    times = (db.q_time_stamp, db.db_time_stamp) if db is not None and db.has_time_stamps else (None, None)
    positives = train_positives(split.utm_db, split.utm_q, radius=pos_radius, min_dist=pos_min_dist,
                                q_time=times[0], db_time=times[1])
    excluded = non_negatives(split.utm_db, split.utm_q, radius=neg_radius)
    has_pos = np.array([len(p) > 0 for p in positives], bool)
    has_neg = np.array([split.num_db - len(e) > 0 for e in excluded], bool)
    query_ids = np.flatnonzero(has_pos & has_neg).astype(np.int64)
    if len(query_ids) == 0:
        raise DatasetError(
            f"{split.name}: no valid training tuple among its {split.num_q} queries: "
            f"{int((~has_pos).sum())} have no database image within {pos_radius:g} m and farther than "
            f"{pos_min_dist:g} m{' taken at another time' if times[0] is not None else ''} (potential positives) and "
            f"{int((~has_neg).sum())} have no database image farther than {neg_radius:g} m (negatives). "
            "Check that the training split's UTM coordinates are in metres and that queries and database "
            "cover the same area."
        )
    return TrainingTuples(query_ids=query_ids, potential_positives=positives, non_negatives=excluded,
                          num_db=split.num_db, pos_radius=float(pos_radius), neg_radius=float(neg_radius),
                          num_without_positive=int((~has_pos).sum()), num_without_negative=int((~has_neg).sum()),
                          pos_min_dist=float(pos_min_dist), time_rule=times[0] is not None)
