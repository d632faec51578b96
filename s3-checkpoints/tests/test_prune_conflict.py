"""keep-last-N never leaves zero verified checkpoints; two writers of one step: exactly one wins."""

from __future__ import annotations

import threading

import pytest
import torch

from s3ckpt import CheckpointStore, S3CkptError, WriteConflict


def _corrupt(store: CheckpointStore, step: int) -> None:
    key = next(o["key"] for o in store.manifest(step)["objects"] if o["name"] == "model")
    store.client.put_object(Bucket=store.bucket, Key=key, Body=b"garbage")


def _fill(store: CheckpointStore, n: int) -> None:
    for s in range(1, n + 1):
        store.save(s, {"model": {"w": torch.full((10,), float(s))}})


def test_keep_last_n(store: CheckpointStore) -> None:
    _fill(store, 5)
    assert store.prune(keep_last=2) == [1, 2, 3]
    assert store.committed_steps() == [4, 5]
    # objects of pruned steps are really gone (all versions: the bucket is versioned)
    vs = store.client.list_object_versions(Bucket=store.bucket, Prefix=store.step_prefix(1))
    assert not vs.get("Versions") and not vs.get("DeleteMarkers")


def test_prune_counts_only_verified(store: CheckpointStore) -> None:
    _fill(store, 5)
    _corrupt(store, 5)
    _corrupt(store, 4)
    deleted = store.prune(keep_last=1)
    assert deleted == [1, 2]  # 3 is the newest VERIFIED one: kept; 4 and 5 (newer, broken) left for a human
    assert store.committed_steps() == [3, 4, 5]
    with pytest.warns(UserWarning):
        assert store.load("latest").step == 3


def test_prune_with_nothing_verified_deletes_nothing(store: CheckpointStore) -> None:
    _fill(store, 3)
    for s in (1, 2, 3):
        _corrupt(store, s)
    assert store.prune(keep_last=1) == []
    assert store.committed_steps() == [1, 2, 3]


def test_keep_last_zero_refused(store: CheckpointStore) -> None:
    with pytest.raises(S3CkptError, match="keep_last must be >= 1"):
        store.prune(keep_last=0)


def test_save_with_keep_last_prunes_after_commit(store: CheckpointStore) -> None:
    for s in range(1, 6):
        store.save(s, {"model": {"w": torch.zeros(2)}}, keep_last=2)
        assert len(store.verified_steps()) >= 1
    assert store.committed_steps() == [4, 5]


@pytest.mark.parametrize("round_", range(3))
def test_two_writers_same_step_exactly_one_wins(minio, bucket: str, round_: int) -> None:
    stores = [CheckpointStore(settings=minio.settings(bucket), run="race", part_size=5 * 1024 * 1024)
              for _ in range(2)]
    payloads = [{"model": {"w": torch.full((2_000_000,), float(i))}} for i in range(2)]  # 8 MB: multipart
    barrier = threading.Barrier(2)
    results: list[object] = [None, None]

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = stores[i].save(7, payloads[i], {"writer": i})
        except Exception as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    conflicts = [r for r in results if isinstance(r, WriteConflict)]
    assert len(conflicts) == 1, results
    winner = 0 if not isinstance(results[0], Exception) else 1
    ck = stores[0].load(7)
    assert ck.metadata["writer"] == winner
    assert torch.equal(ck.state["model"]["w"], payloads[winner]["model"]["w"])
    stores[0].verify(7, deep=True)
    # the loser cleaned up after itself: every object in the step is referenced by the manifest
    keys = {o["Key"] for o in stores[0].client.list_objects_v2(
        Bucket=bucket, Prefix=stores[0].step_prefix(7)).get("Contents", [])}
    assert keys == {o["key"] for o in ck.manifest["objects"]} | {stores[0].step_prefix(7) + "manifest.json"}
