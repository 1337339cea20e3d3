"""Feature encoding shared by training and serving.

Training encodes a DataFrame once (vectorised); the model server encodes a few JSON records per
request without pandas, because building a DataFrame costs far more than the model itself. Both
paths go through the same ``FeatureSpec`` so that a category always gets the same code.

Encoding: one float64 column per contract feature, in ``columns`` order. Numeric columns are their
value as a float; a categorical column holds the index of the value in the vocabulary seen in
training. A category the model never saw (for example a new job title) encodes as NaN, which
LightGBM treats as a missing value: the row follows the missing-value branch of each split on that
column, so the answer is the model's prediction "without knowing" that column, never an error.

Values are not validated here (shared.scoring does that before encoding).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shared.contract import BY_NAME, FEATURE_NAMES

logger = logging.getLogger(__name__)

SPEC_FORMAT = "bankml-features/1"


@dataclass
class FeatureSpec:
    columns: list[str]
    # categorical column -> vocabulary seen in training, sorted; the code of a value is its index
    categories: dict[str, list[str]]
    # Lookup tables built once so that encoding a record is a dict lookup per column.
    _plan: list[tuple[str, dict[str, float] | None]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [c for c in self.categories if c not in self.columns]
        if unknown:
            raise ValueError(f"categories given for columns not in the spec: {unknown}")
        self._plan = [
            (name, {value: float(code) for code, value in enumerate(self.categories[name])})
            if name in self.categories
            else (name, None)
            for name in self.columns
        ]

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: Iterable[str] = FEATURE_NAMES) -> FeatureSpec:
        """Learn the vocabularies of the contract's categorical columns from training data."""
        cols = list(columns)
        categories: dict[str, list[str]] = {}
        for name in cols:
            if BY_NAME[name].kind == "string":
                categories[name] = sorted(str(v) for v in frame[name].dropna().unique())
        return cls(columns=cols, categories=categories)

    @property
    def categorical_indices(self) -> list[int]:
        """Positions of the categorical columns in the encoded matrix (for LightGBM)."""
        return [i for i, name in enumerate(self.columns) if name in self.categories]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "columns": list(self.columns),
            "categories": {k: list(v) for k, v in self.categories.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        fmt = data.get("format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT:
            raise ValueError(f"unsupported feature spec format {fmt!r}, expected {SPEC_FORMAT!r}")
        return cls(columns=list(data["columns"]), categories={k: list(v) for k, v in data["categories"].items()})

    def encode_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Encode validated records (dicts keyed by column name) into an (n, columns) float64 matrix."""
        nan = math.nan
        flat: list[float] = []
        append = flat.append
        plan = self._plan
        for record in records:
            for name, lookup in plan:
                value = record[name]
                append(float(value) if lookup is None else lookup.get(value, nan))
        return np.array(flat, dtype=np.float64).reshape(len(records), len(plan))

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Vectorised encoding of a training/evaluation frame; same codes as ``encode_records``."""
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        for j, (name, lookup) in enumerate(self._plan):
            if lookup is None:
                out[:, j] = pd.to_numeric(frame[name], errors="raise").to_numpy(dtype=np.float64)
            else:
                vocab = pd.CategoricalDtype(categories=self.categories[name])
                codes = frame[name].astype(str).astype(vocab).cat.codes.to_numpy()
                # -1 marks a value outside the vocabulary: make it NaN, exactly like encode_records.
                out[:, j] = np.where(codes < 0, np.nan, codes.astype(np.float64))
        return out
