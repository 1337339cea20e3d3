"""The Bank Marketing dataset contract: one definition used by ingest, training, the model
server, the relay and the Swagger document alike.

Column names are literal strings: ``emp.var.rate`` stays ``emp.var.rate`` everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["integer", "number", "string"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    description: str
    # Values documented for the UCI release; a category outside them is not an error at ingest
    # (it is recorded in the profile), but the model only knows what it was trained on.
    categories: tuple[str, ...] = ()

    @property
    def is_numeric(self) -> bool:
        return self.kind != "string"


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

FEATURES: tuple[Column, ...] = (
    Column("age", "integer", "age in years"),
    Column(
        "job",
        "string",
        "type of job",
        (
            "admin.", "blue-collar", "entrepreneur", "housemaid", "management", "retired",
            "self-employed", "services", "student", "technician", "unemployed", "unknown",
        ),
    ),
    Column("marital", "string", "marital status", ("divorced", "married", "single", "unknown")),
    Column(
        "education",
        "string",
        "education",
        (
            "basic.4y", "basic.6y", "basic.9y", "high.school", "illiterate",
            "professional.course", "university.degree", "unknown",
        ),
    ),
    Column("default", "string", "has credit in default?", ("no", "yes", "unknown")),
    Column("housing", "string", "has housing loan?", ("no", "yes", "unknown")),
    Column("loan", "string", "has personal loan?", ("no", "yes", "unknown")),
    Column("contact", "string", "contact communication type", ("cellular", "telephone")),
    Column("month", "string", "last contact month of year", _MONTHS),
    Column("day_of_week", "string", "last contact day of the week", ("mon", "tue", "wed", "thu", "fri")),
    Column("duration", "integer", "last contact duration, seconds"),
    Column("campaign", "integer", "number of contacts during this campaign"),
    Column("pdays", "integer", "days since last contact of a previous campaign (999: never)"),
    Column("previous", "integer", "number of contacts before this campaign"),
    Column("poutcome", "string", "outcome of the previous campaign", ("failure", "nonexistent", "success")),
    Column("emp.var.rate", "number", "employment variation rate, quarterly"),
    Column("cons.price.idx", "number", "consumer price index, monthly"),
    Column("cons.conf.idx", "number", "consumer confidence index, monthly"),
    Column("euribor3m", "number", "euribor 3 month rate, daily"),
    Column("nr.employed", "number", "number of employees, quarterly"),
)

# The largest magnitude an integer column holds, at ingest and at scoring alike: beyond 2**53 a
# float64 (what the model reads) no longer holds every integer; no column of this data comes near it.
MAX_INTEGER = 2**53

FEATURE_NAMES: tuple[str, ...] = tuple(c.name for c in FEATURES)
BY_NAME: dict[str, Column] = {c.name: c for c in FEATURES}
NUMERIC: tuple[str, ...] = tuple(c.name for c in FEATURES if c.is_numeric)
CATEGORICAL: tuple[str, ...] = tuple(c.name for c in FEATURES if not c.is_numeric)

DEFAULT_LABEL = "y"
LABEL_VALUES: tuple[str, str] = ("no", "yes")  # negative, positive

# The two customers of the Azure ML tutorial / Udacity endpoint.py (ages 17 and 87).
TUTORIAL_CUSTOMERS: tuple[dict[str, object], ...] = (
    {
        "age": 17, "job": "blue-collar", "marital": "married", "education": "university.degree",
        "default": "no", "housing": "yes", "loan": "yes", "contact": "cellular", "month": "may",
        "day_of_week": "mon", "duration": 971, "campaign": 1, "pdays": 999, "previous": 1,
        "poutcome": "failure", "emp.var.rate": -1.8, "cons.price.idx": 92.893,
        "cons.conf.idx": -46.2, "euribor3m": 1.299, "nr.employed": 5099.1,
    },
    {
        "age": 87, "job": "blue-collar", "marital": "married", "education": "university.degree",
        "default": "no", "housing": "yes", "loan": "yes", "contact": "cellular", "month": "may",
        "day_of_week": "mon", "duration": 471, "campaign": 1, "pdays": 999, "previous": 1,
        "poutcome": "failure", "emp.var.rate": -1.8, "cons.price.idx": 92.893,
        "cons.conf.idx": -46.2, "euribor3m": 1.299, "nr.employed": 5099.1,
    },
)
