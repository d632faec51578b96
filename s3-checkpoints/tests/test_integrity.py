"""Corrupt or truncated objects are caught by SHA-256 / size, and `latest` falls back with a warning."""

from __future__ import annotations

import base64
import hashlib

import pytest
import torch

from s3ckpt import CheckpointNotFound, CheckpointStore, IntegrityError, NoVerifiedCheckpoint


def _two_steps(store: CheckpointStore) -> tuple[dict, dict]:
    a = {"model": {"w": torch.full((50_000,), 1.0)}}
    b = {"model": {"w": torch.full((50_000,), 2.0)}}
    store.save(1, a)
    store.save(2, b)
    return a, b


def _model_key(store: CheckpointStore, step: int) -> str:
    return next(o["key"] for o in store.manifest(step)["objects"] if o["name"] == "model")


def _get(store: CheckpointStore, key: str) -> bytes:
    return store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()


def test_flipped_byte_same_size_detected_by_sha256(store: CheckpointStore) -> None:
    a, _ = _two_steps(store)
    key = _model_key(store, 2)
    data = bytearray(_get(store, key))
    data[len(data) // 2] ^= 0xFF  # one bit-flip inside the tensor payload, same size, no checksum header
    store.client.put_object(Bucket=store.bucket, Key=key, Body=bytes(data))
    with pytest.raises(IntegrityError, match="SHA-256"):
        store.verify(2, deep=True)
    with pytest.raises(IntegrityError):
        store.load(2)  # an explicit step never silently becomes another one
    with pytest.warns(UserWarning, match="step 2 failed verification"):
        ck = store.load("latest")
    assert ck.step == 1 and torch.equal(ck.state["model"]["w"], a["model"]["w"])


def test_replaced_object_with_valid_checksum_caught_cheaply(store: CheckpointStore) -> None:
    _two_steps(store)
    key = _model_key(store, 2)
    data = bytearray(_get(store, key))
    data[100] ^= 1
    ck = base64.b64encode(hashlib.sha256(bytes(data)).digest()).decode()
    store.client.put_object(Bucket=store.bucket, Key=key, Body=bytes(data), ChecksumSHA256=ck)
    with pytest.raises(IntegrityError, match="checksum"):
        store.verify(2, deep=False)


def test_truncated_object_falls_back(store: CheckpointStore) -> None:
    _two_steps(store)
    key = _model_key(store, 2)
    store.client.put_object(Bucket=store.bucket, Key=key, Body=_get(store, key)[:1000])
    with pytest.raises(IntegrityError, match="truncated"):
        store.verify(2)
    with pytest.warns(UserWarning, match="falling back"):
        assert store.load("latest").step == 1


def test_missing_object_and_missing_manifest(store: CheckpointStore) -> None:
    _two_steps(store)
    store.client.delete_object(Bucket=store.bucket, Key=_model_key(store, 2))
    with pytest.warns(UserWarning, match="missing"):
        assert store.load("latest").step == 1
    # a step whose manifest is gone does not exist, whatever objects remain
    store.delete_keys([store.step_prefix(1) + "manifest.json"])
    assert store.committed_steps() == [2]
    with pytest.raises(CheckpointNotFound):
        store.load(1)


def test_nothing_verifies_is_a_clear_error(store: CheckpointStore) -> None:
    _two_steps(store)
    for s in (1, 2):
        key = _model_key(store, s)
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"x")
    # not CheckpointNotFound: that would tell a trainer to start over while committed steps exist
    with pytest.warns(UserWarning), pytest.raises(NoVerifiedCheckpoint, match="no checkpoint of run .* not "
                                                                              "starting over"):
        store.load("latest")


def test_empty_run_is_a_clear_error(store: CheckpointStore) -> None:
    with pytest.raises(CheckpointNotFound, match="no committed checkpoint"):
        store.load("latest")


def test_bitrot_on_the_servers_disk_falls_back(tmp_path, minio_binary: str) -> None:
    """Flip one byte inside MinIO's own part file (its own server, to know where the data lives): the
    server's bitrot check aborts the stream, the step counts as damaged, `latest` falls back."""
    import glob
    import os

    from s3ckpt import S3Settings, make_client
    from s3ckpt.minio import MinioServer
    from s3ckpt.s3 import ensure_bucket

    with MinioServer(data_dir=str(tmp_path / "data"), binary=minio_binary) as srv:
        s = S3Settings(endpoint=srv.endpoint, access_key=srv.user, secret_key=srv.password, bucket="rot",
                       prefix="ckpt")
        ensure_bucket(make_client(s), s)
        st = CheckpointStore(settings=s, run="r", part_size=5 * 1024 * 1024)
        st.save(1, {"model": {"w": torch.ones(3 << 20)}})
        st.save(2, {"model": {"w": torch.full((3 << 20,), 2.0)}})
        key = _model_key(st, 2)
        part = sorted(glob.glob(os.path.join(srv.data_dir, "rot", key, "*", "part.1")))[0]
        with open(part, "r+b") as f:
            f.seek(100_000)
            b = f.read(1)
            f.seek(100_000)
            f.write(bytes([b[0] ^ 0xFF]))
        st.verify(2, deep=False)  # size and stored checksum are still right: only reading the bytes tells
        with pytest.raises(IntegrityError):
            st.verify(2, deep=True)
        with pytest.warns(UserWarning, match="step 2 failed verification"):
            ck = st.load("latest")
        assert ck.step == 1 and torch.equal(ck.state["model"]["w"], torch.ones(3 << 20))
