//! The Content service over the wire: resumable writes, one writer per ref, verification.

use berth_proto::containerd::services::content::v1 as pb;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_tests::{Daemon, in_ns};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

fn sha(data: &[u8]) -> String {
    berth_tests::fixtures::sha256_digest(data)
}

fn msg(action: pb::WriteAction, r: &str) -> pb::WriteContentRequest {
    pb::WriteContentRequest {
        action: action as i32,
        r#ref: r.to_string(),
        ..Default::default()
    }
}

/// Opens a Write session; returns the sender and the response stream.
async fn session(
    api: &mut ContentClient<tonic::transport::Channel>,
    ns: &str,
) -> Result<
    (
        mpsc::Sender<pb::WriteContentRequest>,
        tonic::Streaming<pb::WriteContentResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel(8);
    let resp = api
        .write(in_ns(ns, ReceiverStream::new(rx)))
        .await?
        .into_inner();
    Ok((tx, resp))
}

#[tokio::test]
async fn resumable_write_single_writer_and_verification() {
    let d = Daemon::start();
    let mut api = ContentClient::new(d.channel().await);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = sha(&data);

    // First session: stat, write the first half, then disconnect.
    let (tx, mut resp) = session(&mut api, "c").await.expect("write");
    let mut first = msg(pb::WriteAction::Stat, "blob-1");
    first.total = data.len() as i64;
    first.expected = digest.clone();
    tx.send(first).await.expect("send");
    let st = resp.message().await.expect("stat").expect("response");
    assert_eq!(st.offset, 0);
    assert_eq!(st.total, data.len() as i64);
    let mut w = msg(pb::WriteAction::Write, "blob-1");
    w.data = data[..1_500_000].to_vec().into();
    tx.send(w).await.expect("send");
    let r = resp.message().await.expect("write").expect("response");
    assert_eq!(r.offset, 1_500_000);

    // While the first writer holds the ref, a second one is Unavailable.
    let (tx2, mut resp2) = session(&mut api, "c").await.expect("write 2");
    tx2.send(msg(pb::WriteAction::Stat, "blob-1"))
        .await
        .expect("send");
    let err = resp2.message().await.expect_err("second writer");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("ref blob-1 locked"),
        "{}",
        err.message()
    );
    drop(tx);
    drop(resp);

    // The status shows the partial ingest.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        match api
            .status(in_ns(
                "c",
                pb::StatusRequest {
                    r#ref: "blob-1".into(),
                },
            ))
            .await
        {
            Ok(s) => break s.into_inner().status.expect("status"),
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(status.offset, 1_500_000);
    assert_eq!(status.expected, digest);
    let active = api
        .list_statuses(in_ns("c", pb::ListStatusesRequest::default()))
        .await
        .expect("list statuses")
        .into_inner()
        .statuses;
    assert_eq!(active.len(), 1);

    // Resume: a new session with the same ref continues at the stored offset (the writer
    // lock is released once the first session's stream ends).
    let (tx, mut resp) = loop {
        let (tx, mut resp) = session(&mut api, "c").await.expect("write");
        tx.send(msg(pb::WriteAction::Stat, "blob-1"))
            .await
            .expect("send");
        match resp.message().await {
            Ok(Some(st)) => {
                assert_eq!(st.offset, 1_500_000, "resume offset");
                break (tx, resp);
            }
            Err(e) if e.code() == Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => panic!("resume: {other:?}"),
        }
    };
    let mut w = msg(pb::WriteAction::Write, "blob-1");
    w.offset = 1_500_000;
    w.data = data[1_500_000..].to_vec().into();
    tx.send(w).await.expect("send");
    assert_eq!(
        resp.message().await.expect("write").expect("resp").offset,
        data.len() as i64
    );
    let mut c = msg(pb::WriteAction::Commit, "blob-1");
    c.offset = data.len() as i64;
    c.total = data.len() as i64;
    c.expected = digest.clone();
    c.labels.insert("k".into(), "v".into());
    tx.send(c).await.expect("send");
    let done = resp.message().await.expect("commit").expect("resp");
    assert_eq!(done.digest, digest);

    let info = api
        .info(in_ns(
            "c",
            pb::InfoRequest {
                digest: digest.clone(),
            },
        ))
        .await
        .expect("info")
        .into_inner()
        .info
        .expect("info");
    assert_eq!(info.size, data.len() as i64);
    assert_eq!(info.labels.get("k").map(String::as_str), Some("v"));

    // Read with offset and size.
    let mut stream = api
        .read(in_ns(
            "c",
            pb::ReadContentRequest {
                digest: digest.clone(),
                offset: 10,
                size: 20,
            },
        ))
        .await
        .expect("read")
        .into_inner();
    let mut got = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        got.extend(chunk.data);
    }
    assert_eq!(got, data[10..30]);

    // Writing the same digest again is AlreadyExists.
    let (tx, mut resp) = session(&mut api, "c").await.expect("write");
    let mut again = msg(pb::WriteAction::Stat, "blob-2");
    again.expected = digest.clone();
    tx.send(again).await.expect("send");
    let err = resp.message().await.expect_err("exists");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // A wrong offset is OutOfRange.
    let (tx, mut resp) = session(&mut api, "c").await.expect("write");
    let mut bad = msg(pb::WriteAction::Write, "blob-3");
    bad.offset = 99;
    bad.data = vec![1, 2, 3].into();
    tx.send(bad).await.expect("send");
    let err = resp.message().await.expect_err("offset");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
}

#[tokio::test]
async fn digest_mismatch_is_failed_precondition_and_leaves_nothing() {
    let d = Daemon::start();
    let mut api = ContentClient::new(d.channel().await);
    let (tx, mut resp) = session(&mut api, "m").await.expect("write");
    let mut w = msg(pb::WriteAction::Write, "bad");
    w.data = b"these are not the bytes you expect".to_vec().into();
    tx.send(w).await.expect("send");
    resp.message().await.expect("write").expect("resp");
    let mut c = msg(pb::WriteAction::Commit, "bad");
    c.expected = sha(b"something else");
    tx.send(c).await.expect("send");
    let err = resp.message().await.expect_err("mismatch");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("unexpected commit digest"),
        "{}",
        err.message()
    );
    let list = api
        .list(in_ns("m", pb::ListContentRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .message()
        .await
        .expect("batch");
    assert!(
        list.is_none_or(|b| b.info.is_empty()),
        "content left behind"
    );
    let err = api
        .status(in_ns(
            "m",
            pb::StatusRequest {
                r#ref: "bad".into(),
            },
        ))
        .await
        .expect_err("no ingest left");
    assert_eq!(err.code(), Code::NotFound);
    let blobs = std::fs::read_dir(d.root.join("content/blobs/sha256"))
        .expect("dir")
        .count();
    assert_eq!(blobs, 0, "a blob file was left behind");
    let ingests = std::fs::read_dir(d.root.join("content/ingest"))
        .expect("dir")
        .count();
    assert_eq!(ingests, 0, "an ingest was left behind");
}
