"""Registered schemas of each event type's ``data``, one pydantic model per (type, version).

Models are strict (no silent coercion of ``"42"`` into ``42``), so a mistyped field is a
rejection with a reason rather than a quiet guess. Unknown extra fields are ignored: producers
may add fields before consumers know them, which is what lets a schema change roll out
without downtime.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

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
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    url: Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://[^\s]+$")]

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
    ("job.expired", 1): JobExpiredV1,
    ("board.merged", 1): BoardMergedV1,
}
