"""A local S3 server for tests: moto's ``ThreadedMotoServer`` on a free port of 127.0.0.1.

Authentication is on: the server starts open, an IAM user with an access key
and an ``s3:*`` policy is created, then moto is told to check every request's
signature, so wrong credentials are refused as a real S3 or MinIO would. The
server's state lives in this process; buckets get unique names, so tests can
share one server. Nothing outside 127.0.0.1 is ever contacted: ``env()`` points
every AWS setting of a child process (and, with ``monkeypatch``, of this one)
at the server and away from any profile or credentials file of the user.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

#: AWS settings that must not leak in from the machine running the tests.
AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "MINIO_ENDPOINT",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "STAGEFLOW_S3_ENDPOINT_URL",
)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key: str
    secret: str

    def env(self, **overrides: str) -> dict[str, str]:
        """The variables that point a process at this server, with its credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
            **overrides,
        }

    def client(self) -> Any:
        """A boto3 S3 client with this server's credentials (to arrange and inspect)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )

    def bucket(self) -> str:
        """A new, empty bucket with a unique name."""
        name = f"stageflow-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` in ``bucket``."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def child_env(base: dict[str, str], server: S3Server, **overrides: str) -> dict[str, str]:
    """``base`` without the machine's own AWS settings, pointed at ``server``."""
    env = {k: v for k, v in base.items() if k not in AWS_VARS}
    env.update(server.env(**overrides))
    return env


def use_in_this_process(monkeypatch: pytest.MonkeyPatch, server: S3Server) -> None:
    """Point this process's AWS settings at ``server`` for the test."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """A started server with authentication on; stopped (and made open again) after."""
    pytest.importorskip("s3fs", reason="the s3 extra (pip install 'stageflow[s3]')")
    pytest.importorskip("moto.server", reason="moto[server] (the test extra)")
    import boto3
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    previous = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    try:
        # moto keeps its accounts in this process: a server started after another one
        # (another test module) would find the first one's user and buckets
        reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(reset, timeout=30) as answer:
            assert answer.status == 200
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",  # the server is still open
            region_name="us-east-1",
        )
        iam.create_user(UserName="stageflow")
        iam.put_user_policy(
            UserName="stageflow",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        made = iam.create_access_key(UserName="stageflow")["AccessKey"]
        # From now on every request must be signed by a known key (the server runs in
        # this process: its settings are these).
        ActionAuthenticatorMixin.request_count = 0
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        yield S3Server(endpoint, made["AccessKeyId"], made["SecretAccessKey"])
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = previous
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
