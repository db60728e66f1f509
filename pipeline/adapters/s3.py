"""A partner's S3-compatible bucket (AWS S3, SeaweedFS, ...) through boto3.

``s3://bucket[/prefix]`` on one endpoint; objects are written with their SHA-256 in the user
metadata (``x-amz-meta-sha256``), so re-delivering a file the bucket already holds is a HEAD
request and no upload. Path-style addressing (S3-compatible servers on a plain host name);
checksums only when the API requires them (not every S3-compatible server implements the
newer flexible checksums).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipeline.domain.errors import ExportError, ExportErrorCode

_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, 'some/prefix')."""
    m = _URL.match(url)
    if not m:
        raise ValueError(f"not an s3://bucket[/prefix] URL: {url!r}")
    return m.group(1), (m.group(2) or "").strip("/")


class S3Bucket:
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str,
        secret_access_key: SecretStr,
        timeout_s: float = 30,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key.get_secret_value() or None,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _fail(self, what: str, exc: Exception) -> ExportError:
        return ExportError(
            ExportErrorCode.DELIVERY_FAILED, f"{what} {self.url}: {type(exc).__name__}: {exc}"
        )

    def head(self, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self._client.head_object(Bucket=self.bucket, Key=self.key(name)))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(f"HEAD {name} in", exc) from exc

    def put_file(self, name: str, path: Path, sha256: str, content_type: str) -> bool:
        """Upload ``path`` as ``name`` unless the object already holds these bytes (same size
        and SHA-256); True when it was uploaded."""
        from botocore.exceptions import BotoCoreError, ClientError

        size = path.stat().st_size
        found = self.head(name)
        if (
            found is not None
            and int(found.get("ContentLength", -1)) == size
            and found.get("Metadata", {}).get("sha256") == sha256
        ):
            return False
        try:
            with path.open("rb") as body:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self.key(name),
                    Body=body,
                    ContentLength=size,
                    ContentType=content_type,
                    Metadata={"sha256": sha256},
                )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"PUT {name} to", exc) from exc
        return True

    def get(self, name: str) -> bytes:
        obj = self._client.get_object(Bucket=self.bucket, Key=self.key(name))
        return bytes(obj["Body"].read())

    def names(self) -> list[str]:
        """Every object under the prefix, relative to it."""
        out = []
        start = f"{self.prefix}/" if self.prefix else ""
        for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start
        ):
            out += [o["Key"][len(start) :] for o in page.get("Contents", [])]
        return sorted(out)

    def create(self) -> None:
        """Create the bucket if it does not exist (the local stack plays the partner)."""
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._client.create_bucket(Bucket=self.bucket)
