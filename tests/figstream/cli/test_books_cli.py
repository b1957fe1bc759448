"""``figstream books``: the table, ``--json`` and ``--unbalanced`` over homes the real streaming
steps wrote (landing index, ingest), on the local profile and on the aws profile (DynamoDB and
S3 on moto server), and the exit codes: 0 balanced, 3 unbalanced, 1 a user error.

Bad inputs tried: ``--to`` before ``--from``, an unparsable time, an unknown stream (also
with newlines, escape sequences, a bidi override, NUL, an undecodable byte: named escaped, one
line), a home with no state store, a window where nothing landed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from figstream.cli.main import main
from figstream.ingest.publish import Publisher
from figstream.storage.deadletter import deadletter_path
from figstream.streaming import ingest, landing_index
from figstream.streaming.stores import Stores
from tests.figstream.trace.trace_cases import HOUR, posting

WINDOW = ("--from", "2026-11-02T09:00", "--to", "2026-11-02T12:00")


def ingest_two_batches(stores: Stores) -> None:
    """Two batches of one hour: a duplicate delivery across them and two bad records."""
    publisher = Publisher(stores.objects, producer="test")
    for records in (
        [posting("ev-1", "job-1"), posting("bad-1", "j", remote="x"), posting("ev-2", "job-2")],
        [posting("ev-1", "job-1"), posting("bad-2", "j", salary_min="lots")],
    ):
        keys = publisher.publish(records)
        landing_index.index_landing(stores, "postings", keys)
        ingest.ingest_range(stores, "postings", [HOUR], keys)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    ingest_two_batches(Stores.local(tmp_path, "2026-10-01-00:00"))
    return tmp_path


def test_a_balanced_hour_prints_its_figures_and_exits_0(home, capsys):
    assert main(["books", *WINDOW, "--home", str(home)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["stream", "hour", "landed", "materialised", "dead-lettered",
                              "duplicates", "pending", "off", "by", "status"]  # fmt: skip
    assert out[1].split() == ["postings", HOUR, "5", "2", "2", "1", "0", "0", "balanced"]
    assert out[2].split() == ["postings", "total", "(1", "hours)", "5", "2", "2", "1", "0", "0"]
    assert out[-1].startswith("all 1 hours balance; 2 dead letters: figstream dlq list")


def test_a_lost_dead_letter_exits_3_naming_the_hour_and_by_how_much(home, capsys):
    with sqlite3.connect(deadletter_path(home)) as conn:
        conn.execute("DELETE FROM dead_letters WHERE id = (SELECT min(id) FROM dead_letters)")
    assert main(["books", *WINDOW, "--home", str(home), "--unbalanced"]) == 3
    out = capsys.readouterr().out
    assert f"postings  {HOUR}" in out and "UNBALANCED" in out
    assert f"postings {HOUR} does not balance:\n" in out
    assert "  - the dead-letter store holds 1, the ingest dead-lettered 2 (-1)\n" in out
    assert out.endswith("1 of 1 hours do not balance; 1 dead letters: figstream dlq list "
                        "--stream STREAM --partition HOUR\n")  # fmt: skip
    assert main(["books", *WINDOW, "--home", str(home), "--json"]) == 3
    [hour] = orjson.loads(capsys.readouterr().out)["books"]
    assert (hour["landed"], hour["dead_lettered"], hour["difference"]) == (5, 1, 1)
    assert hour["dead_letters_by_reason"] == {"wrong_type": 1}


def test_json_lists_each_hour_with_its_dead_letters_by_reason(home, capsys):
    assert main(["books", *WINDOW, "--home", str(home), "--json", "--stream", "postings"]) == 0
    got = orjson.loads(capsys.readouterr().out)
    assert (got["hours"], got["unbalanced"]) == (1, 0)
    [hour] = got["books"]
    assert hour["dead_letters_by_reason"] == {"wrong_type": 2}
    assert (hour["status"], hour["batches"], hour["duplicates"]) == ("balanced", 2, 1)


def test_nothing_landed_in_the_window_says_so(home, capsys):
    assert main(["books", "--from", "2026-11-03", "--to", "2026-11-04", "--home", str(home)]) == 0
    assert capsys.readouterr().out.startswith("nothing landed from 2026-11-03T00:00:00+00:00")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "2026-11-02", "--to", "2026-11-01"], "must be after --from"),
        (["--stream", "nope"], "unknown stream(s) 'nope'; known streams: postings, boards"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(home, capsys, argv, message):
    assert main(["books", *argv, "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("figstream books: error: ") and message in err
    assert "Traceback" not in err


HOSTILE_STREAMS = [
    "nope\nfigstream books: all 24 hours balance",  # a forged second line
    "\x1b[2J\x1b[31mpostings",  # clear the screen, colour
    "\x1b]0;owned\x07",  # set the terminal's title
    "post\rings",
    "post\u202eings",  # right-to-left override
    "post\u2028ings",  # line separator
    "\x00",
    "\udcff",  # an undecodable byte of argv (surrogate escape)
]


@pytest.mark.parametrize("value", HOSTILE_STREAMS)
def test_an_unknown_stream_is_named_escaped_on_one_line(home, capsys, value):
    assert main(["books", "--stream", "postings", "--stream", value, "--home", str(home)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"figstream books: error: unknown stream(s) {value!r}; known streams: postings, boards\n"
    )
    body = err[:-1]
    assert body.isprintable(), body  # no control, format, separator or surrogate character
    assert value not in body


def test_a_home_with_no_state_store_and_a_bad_time_are_refused(tmp_path, capsys):
    assert main(["books", "--home", str(tmp_path / "nowhere")]) == 1
    assert "no state store in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["books", "--from", "yesterday"])
    assert exit_.value.code == 2
    assert "expected an ISO 8601 time" in capsys.readouterr().err


def test_on_the_aws_profile_it_reads_dynamodb_and_s3(aws_config, tmp_path, capsys):
    from figstream.cli.aws import setup
    from figstream.ingest.routing import Router
    from figstream.settings import routing_path

    setup(aws_config, Router.from_file(routing_path()))
    ingest_two_batches(Stores.aws(aws_config, "2026-10-01-00:00"))
    # --home is not read on aws: the tables and bucket are the profile's, wherever HOME is.
    assert main(["books", *WINDOW, "--home", str(tmp_path / "nowhere")]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == [
        "postings", HOUR, "5", "2", "2", "1", "0", "0", "balanced",
    ]  # fmt: skip
