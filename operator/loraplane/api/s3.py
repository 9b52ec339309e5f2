"""Adapters in S3-compatible object stores: the reference syntax, the pin and how a pod reaches the store.

Layout: `s3://BUCKET/PREFIX/` holds the adapter directory as it is, one object per file, and result.json (the
lineage and every file's sha256). An object can be replaced at any time, so a key names no version: a version
is `s3://BUCKET/PREFIX@sha256:<adapter sha256>`, the digest result.json records over the adapter's files (what
a FineTuneJob's status reports). Whoever pulls a pinned reference refuses any other version.

Credentials: an Opaque Secret with the key `credentials`, an AWS shared credentials file (a `[default]` profile
with `aws_access_key_id` and `aws_secret_access_key`), mounted only into the container that pushes or pulls
(`AWS_SHARED_CREDENTIALS_FILE`); the endpoint and region are not secret and come from the spec
(`AWS_ENDPOINT_URL_S3`, `AWS_REGION`): MinIO, versitygw, Ceph RGW or AWS itself.

Pure (no boto3, no network): the operator imports it for admission; the client is :mod:`loraplane.serving.s3_store`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from loraplane.api.common import DNS_LABEL_PATTERN, K8sModel

S3_AUTH_DIR = "/etc/loraplane/s3"  # where a pod mounts the credentials Secret
S3_CREDENTIALS_KEY = "credentials"  # the Secret's key: an AWS shared credentials file
CREDENTIALS_FILE_ENV = "AWS_SHARED_CREDENTIALS_FILE"
ENDPOINT_ENV = "AWS_ENDPOINT_URL_S3"
REGION_ENV = "AWS_REGION"

_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_SAFE = r"A-Za-z0-9!_*'()\-"  # S3's "safe characters" for object keys, without '.'
_SEGMENT = rf"[{_SAFE}.]*[{_SAFE}][{_SAFE}.]*"  # a segment with one non-dot character: no '.' or '..'
_PREFIX = rf"{_SEGMENT}(/{_SEGMENT})*"
_DIGEST = r"sha256:[a-f0-9]{64}"
S3_PUSH_URI_PATTERN = rf"^s3://{_BUCKET}/{_PREFIX}/?$"
S3_PUSH_URI_HELP = "s3://BUCKET/PREFIX (DNS-style bucket; prefix segments of A-Z a-z 0-9 ! - _ . * ' ( ))"
S3_PINNED_URI_PATTERN = rf"^s3://{_BUCKET}/{_PREFIX}@{_DIGEST}$"
S3_PINNED_URI_HELP = "s3://BUCKET/PREFIX@sha256:ADAPTER_SHA256 (pinned: an object can be replaced)"
S3_URI_HELP = S3_PUSH_URI_HELP.replace("/PREFIX", "/PREFIX[@sha256:ADAPTER_SHA256]")
ENDPOINT_PATTERN = r"^https?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?/?$"


@dataclass(frozen=True)
class S3Ref:
    """One adapter location: a bucket, the key prefix its files live under (no leading or trailing slash) and,
    when pinned, the adapter's sha256 (hex, without `sha256:`)."""

    bucket: str
    prefix: str
    sha256: str | None = None

    @classmethod
    def parse(cls, uri: str) -> S3Ref:
        """The reference of `s3://BUCKET/PREFIX[@sha256:HEX]` (one trailing slash allowed before the pin);
        ValueError naming what is wrong."""
        if not uri.startswith("s3://"):
            raise ValueError(f"{uri!r} is not an S3 reference (no s3:// scheme): expected {S3_URI_HELP}")
        location, at, digest = uri[len("s3://") :].partition("@")
        if at and not re.fullmatch(_DIGEST, digest):
            raise ValueError(f"{uri!r}: the pin must be @sha256: and 64 lowercase hex digits (the adapter sha256)")
        bucket, _, prefix = location.partition("/")
        if not re.fullmatch(_BUCKET, bucket) or ".." in bucket or re.fullmatch(r"[0-9.]+", bucket):
            raise ValueError(
                f"{uri!r}: bucket {bucket!r} is not a DNS-style bucket name (3-63 lowercase letters, digits, '.' "
                "and '-', starting and ending with a letter or digit, not an IP address)"
            )
        prefix = prefix.removesuffix("/")
        if not prefix:
            raise ValueError(f"{uri!r}: no key prefix after the bucket: expected {S3_URI_HELP}")
        for segment in prefix.split("/"):
            if segment in ("", ".", ".."):
                raise ValueError(f"{uri!r}: key prefix {prefix!r} has an empty, '.' or '..' segment")
            if not re.fullmatch(_SEGMENT, segment):
                raise ValueError(f"{uri!r}: key prefix segment {segment!r} has characters outside {S3_URI_HELP}")
        if len(prefix.encode()) > 512:  # S3 keys are at most 1024 bytes; leave room for the file names
            raise ValueError(f"{uri!r}: key prefix longer than 512 bytes")
        return cls(bucket, prefix, digest.removeprefix("sha256:") if at else None)

    def key(self, name: str) -> str:
        """The object key of the adapter file `name` (a relative path)."""
        return f"{self.prefix}/{name}"

    def pinned(self, sha256: str) -> S3Ref:
        return S3Ref(self.bucket, self.prefix, sha256)

    @property
    def location(self) -> str:
        """`s3://BUCKET/PREFIX`, without the pin."""
        return f"s3://{self.bucket}/{self.prefix}"

    def __str__(self) -> str:
        return f"{self.location}@sha256:{self.sha256}" if self.sha256 else self.location


class S3Spec(K8sModel):
    """How the pod that pushes or pulls reaches an S3-compatible store."""

    endpoint: Annotated[
        str | None,
        Field(
            pattern=ENDPOINT_PATTERN,
            max_length=512,
            description="The store's URL (http(s)://HOST[:PORT]), e.g. MinIO, versitygw or Ceph RGW; unset: AWS.",
        ),
    ] = None
    region: Annotated[str | None, Field(pattern=r"^[a-z0-9-]{1,32}$", description="Region; unset: us-east-1.")] = None
    credentials_secret: Annotated[
        str | None,
        Field(
            pattern=DNS_LABEL_PATTERN,
            max_length=253,
            description="An Opaque Secret whose key `credentials` is an AWS shared credentials file ([default] "
            "profile); mounted only into the container that pushes or pulls (the operator never reads it).",
        ),
    ] = None
