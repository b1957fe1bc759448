"""Injected throttling and 5xx over real HTTP: the fault proxy (``tests/fault_proxy.py``) in
front of moto server, and the clients figstream makes (``AwsConfig.client``, pyarrow's
``S3FileSystem`` from ``AwsConfig.s3_filesystem``) pointed at it.

Here: each error shape reaches the client as the service's own error code (so botocore's and
the AWS SDK for C++'s retry classifiers see throttling or a 5xx, not a parse failure), every
faulted call of S3, SQS and DynamoDB is retried to success, and pyarrow's retries follow
``AwsConfig.max_attempts``. The whole streaming path under faults is in
``tests/test_aws_faults_e2e.py``.

Bad inputs tried: rates out of range, a service the proxy has no error shapes for.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest
from botocore.exceptions import ClientError
from fault_proxy import FaultProxy

from figstream.storage.aws import AwsConfig


@pytest.fixture
def proxied(aws_config: AwsConfig, moto_endpoint: str):
    """(proxy, config through the proxy); faults off until the test enables them."""
    proxy = FaultProxy(moto_endpoint, rate=0.0)
    with proxy.serving() as endpoint:
        yield proxy, dataclasses.replace(aws_config, endpoint_url=endpoint)


def _make(config: AwsConfig) -> tuple[str, str]:
    """A bucket, a DynamoDB table and an SQS queue of the config's prefix."""
    config.client("s3").create_bucket(Bucket=config.bucket_name)
    table = config.table_name("faults")
    db = config.client("dynamodb")
    db.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    url = config.client("sqs").create_queue(QueueName=config.queue_name("faults"))["QueueUrl"]
    return table, url


def test_bad_proxy_settings(moto_endpoint):
    with pytest.raises(ValueError, match="rates"):
        FaultProxy(moto_endpoint, rate=0.8, after_rate=0.3)
    with pytest.raises(ValueError, match="rates"):
        FaultProxy(moto_endpoint, rate=-0.1)
    with pytest.raises(ValueError, match="no error shapes"):
        FaultProxy(moto_endpoint, services=("s3", "kinesis"))


@pytest.mark.parametrize(
    ("service", "codes"),
    [
        ("s3", {"SlowDown", "InternalError"}),
        ("dynamodb", {"ProvisionedThroughputExceededException", "ThrottlingException",
                      "InternalServerError"}),
        ("sqs", {"RequestThrottled", "InternalError", "ServiceUnavailable"}),
    ],
)  # fmt: skip
def test_each_fault_reaches_the_client_as_the_services_own_error(proxied, service, codes):
    proxy, config = proxied
    table, url = _make(config)
    once = dataclasses.replace(config, max_attempts=1, prefix=config.prefix + "-once")
    calls = {
        "s3": lambda: once.client("s3").put_object(Bucket=config.bucket_name, Key="k", Body=b"x"),
        "dynamodb": lambda: once.client("dynamodb").get_item(
            TableName=table, Key={"pk": {"S": "a"}}
        ),
        "sqs": lambda: once.client("sqs").send_message(QueueUrl=url, MessageBody="m"),
    }
    proxy.rate = 1.0
    proxy.enable()
    seen = set()
    for _ in range(12):
        with pytest.raises(ClientError) as failed:
            calls[service]()
        seen.add(failed.value.response["Error"]["Code"])
    assert seen == codes
    assert proxy.injected(service, "before") == 12
    assert proxy.injected(service, "after") == 0


def test_faulted_calls_are_retried_to_success_on_every_service(proxied):
    proxy, config = proxied
    table, url = _make(config)
    s3, db, sqs = (config.client(s) for s in ("s3", "dynamodb", "sqs"))
    proxy.rate, proxy.after_rate = 0.3, 0.0
    proxy.enable()
    for n in range(20):
        s3.put_object(Bucket=config.bucket_name, Key=f"k/{n}", Body=str(n).encode())
        db.put_item(TableName=table, Item={"pk": {"S": str(n)}, "n": {"N": str(n)}})
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    for n in range(20):
        body = s3.get_object(Bucket=config.bucket_name, Key=f"k/{n}")["Body"].read()
        assert body == str(n).encode()
        assert db.get_item(TableName=table, Key={"pk": {"S": str(n)}})["Item"]["n"] == {"N": str(n)}
    for service in ("s3", "dynamodb", "sqs"):
        assert proxy.injected(service, "before") >= 5, proxy.summary()
    proxy.enable(False)
    # Faults "before" never reach the server: each message sent exactly once.
    got = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        got += [m["Body"] for m in messages]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in
                     enumerate(messages)],
        )  # fmt: skip
    assert sorted(got, key=int) == [str(n) for n in range(20)]


def test_pyarrow_s3_filesystem_retries_as_many_times_as_the_config_says(proxied):
    from pyarrow import parquet as pq

    proxy, config = proxied
    _make(config)
    table = pa.table({"n": list(range(1000))})
    proxy.rate = 0.3
    proxy.services = ("s3",)
    proxy.enable()
    filesystem = config.s3_filesystem()
    for n in range(8):
        pq.write_table(table, f"{config.bucket_name}/t/{n}.parquet", filesystem=filesystem)
    for n in range(8):
        assert pq.read_table(f"{config.bucket_name}/t/{n}.parquet", filesystem=filesystem) == table
    assert proxy.injected("s3", "before") >= 3, proxy.summary()
    # One try only: a fault is the caller's error.
    proxy.rate = 1.0
    once = dataclasses.replace(config, max_attempts=1).s3_filesystem()
    with pytest.raises(OSError, match=r"SlowDown|InternalError|503|500"):
        pq.read_table(f"{config.bucket_name}/t/0.parquet", filesystem=once)
