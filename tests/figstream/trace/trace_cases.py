"""What the trace tests publish: postings of one event-time hour."""

from __future__ import annotations

TIME = "2026-11-02T10:15:00Z"
HOUR = "2026-11-02-10:00"


def posting(event_id: str, job_id: str, **data) -> dict:
    """A job.posted v1 envelope of board alpha; ``data`` overrides its fields."""
    return {
        "id": event_id, "type": "job.posted", "source": "alpha", "version": 1, "time": TIME,
        "data": {
            "job_id": job_id, "board": "alpha", "title": "Trace Engineer", "company": "Acme",
            "location": "Berlin", "employment_type": "full_time", "remote": False,
            "salary_min": 50000, "salary_max": 60000, "currency": "USD",
            "url": f"https://alpha.example/{job_id}", **data,
        },
    }  # fmt: skip
