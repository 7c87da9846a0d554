"""Transcripts in S3 (or any S3-compatible store), through boto3.

One object per append batch, under keys that sort in append order:
  <prefix><project>/<session>/m/<time ns>-<random>.json              main transcript
  <prefix><project>/<session>/s/<subpath>/<time ns>-<random>.json    a subagent transcript
(`project`, `session` and `subpath` URL-quoted, so each is one path segment). `load` lists and
fetches a transcript's objects in parallel and drops entries whose `uuid` it has already seen,
so a batch the SDK retried is loaded once. Retention is the bucket's lifecycle policy.
boto3 is imported only when TRANSCRIPT_STORE=s3.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, unquote

from lib.transcripts import Entry, SessionKey, SessionListEntry

_DELETE_BATCH = 1000  # the most DeleteObjects takes at once


class S3Transcripts:
    def __init__(self, client: Any, bucket: str, prefix: str, parallel_reads: int = 8) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.parallel_reads = parallel_reads

    def _project(self, project_key: str) -> str:
        return f"{self.prefix}{quote(project_key, safe='')}/"

    def _session(self, key: SessionKey) -> str:
        return f"{self._project(key['project_key'])}{quote(key['session_id'], safe='')}/"

    def _transcript(self, key: SessionKey) -> str:
        subpath = key.get("subpath")
        return self._session(key) + (f"s/{quote(subpath, safe='')}/" if subpath else "m/")

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            yield from page.get("Contents", [])

    def _folders(self, prefix: str) -> Iterator[str]:
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"][len(prefix):-1]

    def append(self, key: SessionKey, entries: list[Entry]) -> None:
        if not entries:
            return
        name = f"{self._transcript(key)}{time.time_ns():020d}-{secrets.token_hex(4)}.json"
        body = json.dumps(entries, separators=(",", ":")).encode()
        self.client.put_object(Bucket=self.bucket, Key=name, Body=body,
                               ContentType="application/json")

    def load(self, key: SessionKey) -> list[Entry] | None:
        names = sorted(obj["Key"] for obj in self._objects(self._transcript(key)))
        if not names:
            return None
        with ThreadPoolExecutor(max_workers=self.parallel_reads) as pool:
            batches = pool.map(self._read, names)
            seen: set[str] = set()
            entries: list[Entry] = []
            for batch in batches:
                for entry in batch:
                    uuid = entry.get("uuid")
                    if uuid:
                        if uuid in seen:
                            continue
                        seen.add(uuid)
                    entries.append(entry)
        return entries

    def _read(self, name: str) -> list[Entry]:
        return json.loads(self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read())

    def list_sessions(self, project_key: str) -> list[SessionListEntry]:
        sessions: list[SessionListEntry] = []
        for folder in self._folders(self._project(project_key)):
            session_id = unquote(folder)
            key: SessionKey = {"project_key": project_key, "session_id": session_id}
            times = [obj["LastModified"].timestamp() for obj in self._objects(self._transcript(key))]
            if times:
                sessions.append({"session_id": session_id, "mtime": int(max(times) * 1000)})
        return sessions

    def list_subkeys(self, key: SessionKey) -> list[str]:
        return sorted(unquote(folder) for folder in self._folders(f"{self._session(key)}s/"))

    def delete(self, key: SessionKey) -> None:
        prefix = self._transcript(key) if key.get("subpath") else self._session(key)
        names = [obj["Key"] for obj in self._objects(prefix)]
        for start in range(0, len(names), _DELETE_BATCH):
            batch = names[start:start + _DELETE_BATCH]
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True},
            )
