"""Transcripts in S3 (or any S3-compatible store), through boto3.

One object per append batch, under keys that sort in append order:
  <prefix><project>/<session>/m/<time ns>-<random>.json              main transcript
  <prefix><project>/<session>/s/<subpath>/<time ns>-<random>.json    a subagent transcript
  <prefix><project>/!summaries/<session>.json                        the session's summary
(`project`, `session` and `subpath` URL-quoted, so each is one path segment). `load` lists and
fetches a transcript's objects in parallel and drops entries whose `uuid` it has already seen,
so a batch the SDK retried is loaded once. Retention is the bucket's lifecycle policy.
boto3 is imported only when TRANSCRIPT_STORE=s3.

Summaries (`summary.py`; `!` is never in a quoted id, so `!summaries` is no session): an append
to a main transcript reads the session's summary while it writes the batch, then rewrites it
with the batch folded in: one GET and one PUT more per append, the PUT after the batch's, so
the summary's `LastModified` (its `mtime`) is never older than the batch's. Two appends to one
session at once may lose one's fold: the summary then looks stale to the SDK (older than the
session's last batch), which reads that transcript itself, and the next append repairs it.
`list_session_summaries` is one LIST per 1,000 sessions and one GET per session
(`parallel_reads` at a time), whatever the transcripts hold.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, unquote

from lib.transcripts import Entry, SessionKey, SessionListEntry, SessionSummary, summary

_DELETE_BATCH = 1000  # the most DeleteObjects takes at once
_SUMMARIES = "!summaries"


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

    def _summary(self, key: SessionKey) -> str:
        return f"{self._project(key['project_key'])}{_SUMMARIES}/{quote(key['session_id'], safe='')}.json"

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
        if key.get("subpath"):
            self._put(name, body)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            stored = pool.submit(self._read_summary, key)
            self._put(name, body)
            fields = summary.merge(stored.result(), summary.delta(entries))
        self._put(self._summary(key), json.dumps(fields, ensure_ascii=False).encode())

    def _put(self, name: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=name, Body=body,
                               ContentType="application/json")

    def _read_summary(self, key: SessionKey) -> dict[str, Any]:
        try:
            return json.loads(self._read_object(self._summary(key)))
        except self.client.exceptions.NoSuchKey:
            return {}

    def _read_object(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()

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
        return json.loads(self._read_object(name))

    def list_sessions(self, project_key: str) -> list[SessionListEntry]:
        sessions: list[SessionListEntry] = []
        for folder in self._folders(self._project(project_key)):
            if folder == _SUMMARIES:
                continue
            session_id = unquote(folder)
            key: SessionKey = {"project_key": project_key, "session_id": session_id}
            times = [obj["LastModified"].timestamp() for obj in self._objects(self._transcript(key))]
            if times:
                sessions.append({"session_id": session_id, "mtime": int(max(times) * 1000)})
        return sessions

    def list_session_summaries(self, project_key: str) -> list[SessionSummary]:
        prefix = f"{self._project(project_key)}{_SUMMARIES}/"
        return self.session_summaries(project_key, [
            unquote(obj["Key"][len(prefix):-len(".json")])
            for obj in self._objects(prefix) if obj["Key"].endswith(".json")])

    def session_summaries(self, project_key: str, session_ids: list[str]) -> list[SessionSummary]:
        """A GET per session (`parallel_reads` at a time), no listing."""
        def read(session_id: str) -> SessionSummary | None:
            name = self._summary({"project_key": project_key, "session_id": session_id})
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=name)
            except self.client.exceptions.NoSuchKey:  # none yet, or deleted since a listing
                return None
            return summary.summary_from(session_id,
                                        int(answer["LastModified"].timestamp() * 1000),
                                        json.loads(answer["Body"].read()))

        with ThreadPoolExecutor(max_workers=self.parallel_reads) as pool:
            return [found for found in pool.map(read, session_ids) if found is not None]

    def list_subkeys(self, key: SessionKey) -> list[str]:
        return sorted(unquote(folder) for folder in self._folders(f"{self._session(key)}s/"))

    def delete(self, key: SessionKey) -> None:
        prefix = self._transcript(key) if key.get("subpath") else self._session(key)
        names = [obj["Key"] for obj in self._objects(prefix)]
        if not key.get("subpath"):
            names.append(self._summary(key))  # deleting a key that is not there is no error
        for start in range(0, len(names), _DELETE_BATCH):
            batch = names[start:start + _DELETE_BATCH]
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True},
            )
