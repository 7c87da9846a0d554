"""The S3 transcript store through boto3 against moto."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import boto3
import pytest
from claude_agent_sdk.testing import run_session_store_conformance
from moto import mock_aws

from lib.transcripts import SdkSessionStore, SessionKey
from lib.transcripts.s3 import S3Transcripts
from tests.test_transcripts_upstash import check_titles

KEY: SessionKey = {"project_key": "user-hash", "session_id": "3f0c8a4e-0000-4000-8000-000000000001"}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="transcripts")
        yield client


def test_sdk_conformance(s3):
    counter = iter(range(1000))

    def make() -> SdkSessionStore:  # a fresh prefix per contract, as the suite expects
        return SdkSessionStore(S3Transcripts(s3, "transcripts", f"run{next(counter)}/"))

    asyncio.run(run_session_store_conformance(make))


def test_a_retried_batch_is_loaded_once(s3):
    store = S3Transcripts(s3, "transcripts", "t/")
    batch = [{"type": "user", "uuid": "u1"}, {"type": "assistant", "uuid": "u2"}]
    store.append(KEY, batch)
    store.append(KEY, batch)
    store.append(KEY, [{"type": "mode"}, {"type": "user", "uuid": "u3"}])
    assert store.load(KEY) == [*batch, {"type": "mode"}, {"type": "user", "uuid": "u3"}]


def test_many_batches_load_in_order_and_delete_in_bulk(s3):
    store = S3Transcripts(s3, "transcripts", "t/")
    for i in range(1001):  # more objects than one list page and one DeleteObjects call
        store.append(KEY, [{"type": "user", "uuid": f"e{i}", "n": i}])
    assert [e["n"] for e in store.load(KEY)] == list(range(1001))
    store.delete(KEY)
    assert store.load(KEY) is None


def test_summaries_give_titles(s3):
    store = S3Transcripts(s3, "transcripts", "t/")
    check_titles(store)
    assert [s["session_id"] for s in store.list_sessions("titles")] == ["s2"]  # no `!summaries`


def test_a_summary_costs_two_requests_per_append_and_one_read_per_session(s3):
    store = S3Transcripts(s3, "transcripts", "t/")
    calls: list[str] = []
    s3.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    store.append(KEY, [{"type": "user", "uuid": "u1", "message": {"content": "hello"}}])
    assert sorted(calls) == ["GetObject", "PutObject", "PutObject"]
    calls.clear()
    store.append({**KEY, "subpath": "subagents/agent-1"}, [{"type": "user", "uuid": "s1"}])
    assert calls == ["PutObject"]
    calls.clear()
    (found,) = store.list_session_summaries(KEY["project_key"])
    assert found["title"] == "hello" and sorted(calls) == ["GetObject", "ListObjectsV2"]
    calls.clear()
    assert store.session_summaries(KEY["project_key"], [KEY["session_id"], "none"]) == [found]
    assert calls == ["GetObject", "GetObject"]  # one read per session asked for, no listing
