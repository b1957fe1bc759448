"""Registered schemas of each event type's ``data``, one pydantic model per (type, version).

Models are strict (no silent coercion of ``"42"`` into ``42``), so a mistyped field is a
rejection with a reason rather than a quiet guess. Unknown extra fields are ignored: producers
may add fields before consumers know them, which is what lets a schema change roll out
without downtime.

``job.posted``/``job.updated`` v2 replace v1's flat ``salary_min``/``salary_max``/``currency``
with a ``salary`` range object (with a ``period``) and v1's one ``location`` string with
``{city, region, country_code}`` (ISO 3166-1 alpha-2). Every v2 location renders as a valid v1
string (see :mod:`figstream.events.geo`), so a v2 event always downcasts to a valid v1 one for
legacy. :data:`COMPATIBILITY` gives each type its mode (:mod:`figstream.events.compatibility`
writes the rules down).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from figstream.events.geo import ISO_COUNTRIES, render_location

MAX_SALARY = 5_000_000

Text = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=200)]
JobId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
]
Board = Annotated[
    str, StringConstraints(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
]
Salary = Annotated[int, Field(ge=0, le=MAX_SALARY)]
EmploymentType = Literal["full_time", "part_time", "contract", "internship", "temporary"]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
SalaryPeriod = Literal["year", "month", "week", "day", "hour"]
Url = Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://[^\s]+$")]
MAX_LOCATION = 200  # a v1 location's length: every v2 location must render within it


def _iso_country(value: str) -> str:
    if value not in ISO_COUNTRIES:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return value


CountryCode = Annotated[str, AfterValidator(_iso_country)]


class _Data(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class JobPostingV1(_Data):
    """The full posting; ``job.updated`` carries the whole new snapshot, not a patch."""

    job_id: JobId
    title: Text
    company: Text
    location: Text
    employment_type: EmploymentType
    remote: bool
    salary_min: Salary | None = None
    salary_max: Salary | None = None
    currency: Currency = "USD"
    url: Url

    @model_validator(mode="after")
    def _salary_range(self) -> JobPostingV1:
        if (
            self.salary_min is not None
            and self.salary_max is not None
            and self.salary_max < self.salary_min
        ):
            raise ValueError(f"salary_max {self.salary_max} < salary_min {self.salary_min}")
        return self


class JobPostedV1(JobPostingV1):
    pass


class JobUpdatedV1(JobPostingV1):
    pass


class LocationV2(_Data):
    """Where the job is; ``region`` is a state or province, ``country_code`` ISO 3166-1."""

    city: Text
    region: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    country_code: CountryCode | None = None


class SalaryRangeV2(_Data):
    """A salary range; either bound may be unknown, the currency and period never are."""

    min: Salary | None = None
    max: Salary | None = None
    currency: Currency
    period: SalaryPeriod

    @model_validator(mode="after")
    def _ordered(self) -> SalaryRangeV2:
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"salary max {self.max} < salary min {self.min}")
        return self


class JobPostingV2(_Data):
    """v1's posting with a structured location and a salary range object."""

    job_id: JobId
    title: Text
    company: Text
    location: LocationV2
    employment_type: EmploymentType
    remote: bool
    salary: SalaryRangeV2 | None = None
    url: Url

    @model_validator(mode="after")
    def _renders_as_v1(self) -> JobPostingV2:
        rendered = render_location(self.location.model_dump())
        if len(rendered) > MAX_LOCATION:
            raise ValueError(
                f"location renders as {len(rendered)} characters for v1, over {MAX_LOCATION}"
            )
        return self


class JobPostedV2(JobPostingV2):
    pass


class JobUpdatedV2(JobPostingV2):
    pass


class JobExpiredV1(_Data):
    job_id: JobId
    reason: Literal["filled", "expired", "withdrawn"]


class BoardMergedV1(_Data):
    """``absorbed_board`` stops existing; its postings now live on ``surviving_board``."""

    absorbed_board: Board
    surviving_board: Board

    @model_validator(mode="after")
    def _distinct(self) -> BoardMergedV1:
        if self.absorbed_board == self.surviving_board:
            raise ValueError("a board cannot merge into itself")
        return self


REGISTRY: dict[tuple[str, int], type[_Data]] = {
    ("job.posted", 1): JobPostedV1,
    ("job.updated", 1): JobUpdatedV1,
    ("job.posted", 2): JobPostedV2,
    ("job.updated", 2): JobUpdatedV2,
    ("job.expired", 1): JobExpiredV1,
    ("board.merged", 1): BoardMergedV1,
}

# Each type's compatibility mode (the rules: figstream.events.compatibility). BACKWARD, the
# Glue/Confluent default, unless a type says otherwise. The postings are FULL: the platform
# reads v1 through the upcaster and legacy, a v1 reader, gets v2 through the downcaster.
COMPATIBILITY: dict[str, str] = {"job.posted": "FULL", "job.updated": "FULL"}
DEFAULT_COMPATIBILITY = "BACKWARD"
