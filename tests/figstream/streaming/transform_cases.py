"""Cases the parse and table-operation tests share: a time, hypothesis settings, texts."""

from datetime import UTC, datetime

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

unicode_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12
)
tricky_texts = st.sampled_from(
    [
        "",
        " ",
        "a",
        "x" * 200,
        "x" * 201,
        "é" * 100,
        "é" * 200,
        "é" * 201,
        " Data  Eng ",
        "tab\tsep",
        "nbsp\u00a0sep",
        "ideo\u3000space",
        "emoji 🚀",
        "a|b",
        "back\\slash",
    ]
)
texts = tricky_texts | unicode_text | st.from_regex(r"[A-Za-z ,.&-]{1,40}", fullmatch=True)


@st.composite
def time_strings(draw) -> str:
    year = draw(
        st.sampled_from([0, 1, 1900, 1999, 2000, 2004, 2024, 2026, 2096, 2099, 2100, 2400, 9999])
        | st.integers(0, 9999)
    )
    month = draw(st.integers(0, 13))
    day = draw(st.sampled_from([0, 1, 28, 29, 30, 31, 32]) | st.integers(0, 39))
    hour, minute, second = (draw(st.integers(0, top)) for top in (25, 61, 61))
    fraction = draw(st.text("0123456789", max_size=7))
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    text += f".{fraction}Z" if fraction or draw(st.booleans()) else "Z"
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(["", "0", "-", ":", ".", "T", "t", "Z", "z", " ", "+", "٣"]))
        text = text[:at] + piece + text[at + draw(st.integers(0, 1)) :]
    return text


edge_times = st.sampled_from(
    [
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00.0Z",
        "2099-12-31T23:59:59.999999Z",
        "2100-01-01T00:00:00Z",
        "2100-01-01T00:00:00.000000Z",
        "2000-02-29T12:00:00Z",
        "2100-02-29T12:00:00Z",
        "2024-02-29T23:59:59.5Z",
        "2026-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-12-31T23:59:59Z",
    ]
)
