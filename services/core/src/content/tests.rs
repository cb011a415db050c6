//! Tests of the content store: writes, resumes, commits, mismatches and blobs shared by
//! namespaces.

use std::io::Read;

use super::*;

async fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().expect("tmp");
    let cs = test_store(dir.path());
    (dir, cs)
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Hardening, item 4: an ingest begun for a size (or digest) that was a lie does not
/// refuse the next writer of the ref forever: that writer starts over.
#[tokio::test]
async fn an_ingest_for_another_size_or_digest_starts_over() {
    let (_d, cs) = store().await;
    let data = b"the real layer".to_vec();
    let dg = sha(&data);
    let mut w = cs
        .writer("ns", "layer-x", 1_000_000_000_000_000, &dg, None)
        .await
        .expect("writer");
    w.write(b"short".to_vec()).await.expect("write");
    drop(w);
    let mut w = cs
        .writer("ns", "layer-x", data.len() as i64, &dg, None)
        .await
        .expect("a writer with the true size");
    assert_eq!(w.offset(), 0);
    w.write(data.clone()).await.expect("write");
    let info = w
        .commit(0, "", BTreeMap::new(), None)
        .await
        .expect("commit");
    assert_eq!((info.digest, info.size), (dg, data.len() as i64));

    let mut w = cs
        .writer("ns", "layer-y", 0, &sha(b"one"), None)
        .await
        .expect("writer");
    w.write(b"on".to_vec()).await.expect("write");
    drop(w);
    let w = cs
        .writer("ns", "layer-y", 0, &sha(b"two"), None)
        .await
        .expect("writer");
    assert_eq!(w.offset(), 0);
    assert_eq!(w.status().expected, sha(b"two"));
}

/// A writer for a blob the namespace has answers AlreadyExists and holds the blob in
/// its lease, as containerd's does: found by the soak, where a client-side pull skipped
/// a blob that another client's image removal then had collected under it.
#[tokio::test]
async fn an_existing_blob_is_held_by_the_writers_lease() {
    let (_d, cs) = store().await;
    let data = b"shared layer".to_vec();
    let dg = sha(&data);
    let mut w = cs.writer("ns", "a", 0, &dg, None).await.expect("writer");
    w.write(data).await.expect("write");
    w.commit(0, "", BTreeMap::new(), None)
        .await
        .expect("commit");
    let leases = crate::leases::Leases::new(cs.inner.store.clone(), crate::collector::channel().0);
    leases
        .create("ns", "pull".into(), BTreeMap::new())
        .await
        .expect("lease");
    let err = cs
        .writer("ns", "b", 0, &dg, Some("pull"))
        .await
        .err()
        .expect("exists");
    assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
    let held: Vec<String> = leases
        .list_resources("ns", "pull")
        .await
        .expect("resources")
        .into_iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(held, vec![format!("content/{dg}")]);
    let missing = cs.writer("ns", "c", 0, &dg, Some("nope")).await.err();
    assert!(matches!(missing, Some(Error::NotFound(_))), "{missing:?}");
}

#[tokio::test]
async fn write_resume_commit_read() {
    let (_d, cs) = store().await;
    let data = b"hello, berth content".to_vec();
    let dg = sha(&data);
    let mut w = cs
        .writer("ns", "r1", data.len() as i64, &dg, None)
        .await
        .expect("writer");
    // One writer per ref.
    let busy = cs
        .writer("ns", "r1", 0, "", None)
        .await
        .err()
        .expect("locked");
    assert!(matches!(busy, Error::Unavailable(_)), "{busy}");
    w.write(data[..5].to_vec()).await.expect("write");
    drop(w);
    let st = cs.status("ns", "r1").await.expect("status");
    assert_eq!(st.offset, 5);
    assert_eq!(st.expected, dg);
    // Resume where it stopped.
    let mut w = cs.writer("ns", "r1", 0, "", None).await.expect("resume");
    assert_eq!(w.offset(), 5);
    w.write(data[5..].to_vec()).await.expect("write");
    let info = w
        .commit(0, "", BTreeMap::new(), None)
        .await
        .expect("commit");
    assert_eq!(info.digest, dg);
    assert_eq!(info.size, data.len() as i64);
    assert!(cs.status("ns", "r1").await.is_err(), "ingest left behind");
    let (mut f, size) = cs.open_blob("ns", &dg).await.expect("open");
    let mut back = Vec::new();
    f.read_to_end(&mut back).expect("read");
    assert_eq!(back, data);
    assert_eq!(size, data.len() as i64);
    // Another namespace does not see it until it writes it too.
    assert!(cs.info("other", &dg).await.unwrap_err().is_not_found());
    let dup = cs
        .writer("ns", "r2", 0, &dg, None)
        .await
        .err()
        .expect("exists");
    assert!(matches!(dup, Error::AlreadyExists(_)));
}

#[tokio::test]
async fn digest_mismatch_leaves_nothing() {
    let (_d, cs) = store().await;
    let wrong = sha(b"something else");
    let mut w = cs
        .writer("ns", "bad", 0, &wrong, None)
        .await
        .expect("writer");
    w.write(b"actual bytes".to_vec()).await.expect("write");
    let err = w
        .commit(0, "", BTreeMap::new(), None)
        .await
        .expect_err("mismatch");
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    assert!(
        err.to_string().contains("unexpected commit digest"),
        "{err}"
    );
    assert!(cs.status("ns", "bad").await.is_err());
    assert!(
        cs.list("ns", Filter::always())
            .await
            .expect("list")
            .is_empty()
    );
    let blobs: Vec<_> = fs::read_dir(cs.inner.root.join("blobs/sha256"))
        .expect("dir")
        .collect();
    assert!(blobs.is_empty());
}

#[tokio::test]
async fn shared_blob_survives_until_last_namespace_deletes() {
    let (_d, cs) = store().await;
    let data = b"shared".to_vec();
    let dg = sha(&data);
    for ns in ["a", "b"] {
        let mut w = cs.writer(ns, "r", 0, "", None).await.expect("writer");
        w.write(data.clone()).await.expect("write");
        w.commit(6, &dg, BTreeMap::new(), None)
            .await
            .expect("commit");
    }
    let path = cs.blob_path(&dg).expect("path");
    cs.delete("a", &dg).await.expect("delete a");
    assert!(path.exists());
    cs.delete("b", &dg).await.expect("delete b");
    assert!(!path.exists());
    assert!(cs.delete("b", &dg).await.unwrap_err().is_not_found());
}

fn request(action: WriteAction, offset: i64, data: &[u8]) -> WriteRequest {
    WriteRequest {
        action,
        offset,
        total: 0,
        expected: String::new(),
        data: Bytes::copy_from_slice(data),
        labels: BTreeMap::new(),
    }
}

/// A Write session as containerd's content service runs one: writes at the current
/// offset, a stat, a commit that ends the session; a write elsewhere is OutOfRange; a
/// second session for a blob the namespace holds ends with AlreadyExists.
#[tokio::test]
async fn a_write_session_writes_stats_and_commits() {
    let (_d, cs) = store().await;
    let data = b"hello, session".to_vec();
    let dg = sha(&data);
    let mut s = WriteSession::open(&cs, "ns", "ref-1", data.len() as i64, &dg, None)
        .await
        .expect("open");
    let st = s
        .step(request(WriteAction::Write, 0, &data[..5]))
        .await
        .expect("write");
    assert_eq!(st.offset, 5);
    let err = s
        .step(request(WriteAction::Write, 3, b"x"))
        .await
        .expect_err("write away from the offset");
    assert!(matches!(err, Error::OutOfRange(_)), "{err}");
    let mut s = WriteSession::open(&cs, "ns", "ref-1", data.len() as i64, &dg, None)
        .await
        .expect("resume");
    let st = s
        .step(request(WriteAction::Stat, 0, b""))
        .await
        .expect("stat");
    assert_eq!(
        (st.offset, st.total, st.committed),
        (5, data.len() as i64, false)
    );
    let st = s
        .step(request(WriteAction::Commit, 5, &data[5..]))
        .await
        .expect("commit");
    assert_eq!(
        (st.offset, st.digest.as_str(), st.committed),
        (14, dg.as_str(), true)
    );
    assert!(s.step(request(WriteAction::Stat, 0, b"")).await.is_err());
    let mut again = WriteSession::open(&cs, "ns", "ref-2", 0, "", None)
        .await
        .expect("open");
    let mut exists = request(WriteAction::Stat, 0, b"");
    exists.expected = dg;
    let err = again.step(exists).await.expect_err("blob exists");
    assert!(err.is_already_exists(), "{err}");
}

/// Big writes are hashed beside their file write, small ones after it: mixed, they make
/// the blob and the digest of the bytes in order; the status follows every write while
/// the `updatedat` file is touched at most once a second, and a resumed ingest re-hashes
/// what the side-by-side writes left.
#[tokio::test]
async fn big_and_small_writes_make_one_blob_in_order() {
    let (_d, cs) = store().await;
    let data: Vec<u8> = (0..(3 * SIDE_BY_SIDE + 12_345))
        .map(|i| (i % 251) as u8)
        .collect();
    let dg = sha(&data);
    let cuts = [
        0,
        10,
        SIDE_BY_SIDE + 10,
        SIDE_BY_SIDE + 20,
        3 * SIDE_BY_SIDE,
    ];
    let mut w = cs
        .writer("ns", "mixed", 0, &dg, None)
        .await
        .expect("writer");
    let opened = w.status().updated_at;
    for pair in cuts.windows(2) {
        w.write(data[pair[0]..pair[1]].to_vec())
            .await
            .expect("write");
        assert_eq!(w.offset(), pair[1] as i64);
        assert_eq!(w.digest(), sha(&data[..pair[1]]));
    }
    assert!(w.status().updated_at >= opened);
    let dir = w.state.as_ref().expect("state").dir.clone();
    assert_eq!(
        read_i64(&dir.join("updatedat")),
        opened,
        "touched within the second"
    );
    drop(w);

    let mut w = cs
        .writer("ns", "mixed", 0, &dg, None)
        .await
        .expect("resume");
    assert_eq!(w.offset(), (3 * SIDE_BY_SIDE) as i64);
    assert_eq!(w.digest(), sha(&data[..3 * SIDE_BY_SIDE]));
    w.write(Bytes::copy_from_slice(&data[3 * SIDE_BY_SIDE..]))
        .await
        .expect("write the rest");
    let info = w
        .commit(data.len() as i64, &dg, BTreeMap::new(), None)
        .await
        .expect("commit");
    assert_eq!((info.digest, info.size), (dg.clone(), data.len() as i64));
    let mut stored = Vec::new();
    cs.open_blob("ns", &dg)
        .await
        .expect("open")
        .0
        .read_to_end(&mut stored)
        .expect("read");
    assert!(stored == data, "the blob holds the bytes in order");
}

/// A big write whose file write fails leaves the writer as it was (offset and digest: the
/// hashing done beside it is taken back), and the writer goes on from there.
#[tokio::test]
async fn a_failed_big_write_is_taken_back() {
    let (_d, cs) = store().await;
    let data: Vec<u8> = (0..(2 * SIDE_BY_SIDE)).map(|i| (i % 253) as u8).collect();
    let dg = sha(&data);
    let mut w = cs
        .writer("ns", "fails", 0, &dg, None)
        .await
        .expect("writer");
    w.write(data[..10].to_vec()).await.expect("small write");
    let (path, rw) = {
        let st = w.state.as_mut().expect("state");
        let path = st.dir.join("data");
        // A read-only handle: the positioned write fails (EBADF).
        let rw = std::mem::replace(&mut st.file, Arc::new(File::open(&path).expect("open")));
        (path, rw)
    };
    let err = w
        .write(data[10..10 + SIDE_BY_SIDE].to_vec())
        .await
        .expect_err("the file write fails");
    assert!(err.to_string().contains("write ingest"), "{err}");
    assert_eq!(w.offset(), 10);
    assert_eq!(w.digest(), sha(&data[..10]), "the hashing was taken back");
    assert_eq!(fs::metadata(&path).expect("stat").len(), 10);

    w.state.as_mut().expect("state").file = rw;
    w.write(data[10..].to_vec()).await.expect("write again");
    let info = w
        .commit(data.len() as i64, &dg, BTreeMap::new(), None)
        .await
        .expect("commit");
    assert_eq!(info.digest, dg);
}
