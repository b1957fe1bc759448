"""The aws profile's settings, and a round trip to the emulator over HTTP."""

from __future__ import annotations

import pytest

from figstream.storage.aws import AwsConfig


def test_defaults_and_names() -> None:
    config = AwsConfig.from_env({})
    assert (config.region, config.endpoint_url, config.retry_mode) == (
        "us-east-1",
        None,
        "adaptive",
    )
    assert config.bucket_name == "figstream-data"
    assert config.table_name("jobs") == "figstream-jobs"
    assert config.queue_name("postings", dlq=True) == "figstream-postings-dlq"
    assert config.client_config().retries == {"mode": "adaptive", "total_max_attempts": 10}


def test_environment_wins() -> None:
    config = AwsConfig.from_env(
        {
            "FIGSTREAM_AWS_ENDPOINT": "http://127.0.0.1:5000",
            "FIGSTREAM_AWS_PREFIX": "prod-eu",
            "FIGSTREAM_AWS_REGION": "eu-west-1",
            "FIGSTREAM_S3_BUCKET": "acme-figstream",
            "FIGSTREAM_AWS_RETRY_MODE": "standard",
            "FIGSTREAM_AWS_MAX_ATTEMPTS": "4",
        }
    )
    assert config.bucket_name == "acme-figstream"
    assert config.rule_name("boards") == "prod-eu-boards"
    assert config.client_config().region_name == "eu-west-1"
    assert config.client_config().retries == {"mode": "standard", "total_max_attempts": 4}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FIGSTREAM_AWS_PREFIX": "Prod"}, "lowercase"),
        ({"FIGSTREAM_AWS_PREFIX": "a" * 41}, "1-40"),
        ({"FIGSTREAM_AWS_PREFIX": "-x"}, "starting"),
        ({"FIGSTREAM_AWS_PREFIX": "a/b"}, "lowercase"),
        ({"FIGSTREAM_AWS_ENDPOINT": "127.0.0.1:5000"}, "http"),
        ({"FIGSTREAM_AWS_ENDPOINT": "file:///etc"}, "http"),
        ({"FIGSTREAM_AWS_RETRY_MODE": "legacy-loop"}, "retry mode"),
        ({"FIGSTREAM_AWS_MAX_ATTEMPTS": "0"}, "positive"),
        ({"FIGSTREAM_AWS_MAX_ATTEMPTS": "many"}, "positive"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AwsConfig.from_env(env)


def test_a_client_talks_to_the_emulator(aws_config: AwsConfig) -> None:
    s3 = aws_config.client("s3")
    s3.create_bucket(Bucket=aws_config.bucket_name)
    s3.put_object(Bucket=aws_config.bucket_name, Key="a/b", Body=b"x")
    assert s3.get_object(Bucket=aws_config.bucket_name, Key="a/b")["Body"].read() == b"x"
    # pyarrow reaches the same object through its own endpoint settings
    filesystem = aws_config.s3_filesystem()
    with filesystem.open_input_stream(f"{aws_config.bucket_name}/a/b") as stream:
        assert stream.read() == b"x"
