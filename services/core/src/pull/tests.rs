use berth_oci::image::GC_REF_CONTENT_PREFIX;

use super::*;
use crate::registry::testutil::{self, OciImage, TestRegistry};

#[test]
fn ingest_refs() {
    let d = |mt: &str| Descriptor {
        media_type: mt.into(),
        digest: format!("sha256:{}", "a".repeat(64)),
        size: 1,
        annotations: BTreeMap::new(),
    };
    assert!(ref_key(&d(oci::OCI_MANIFEST)).starts_with("manifest-sha256:"));
    assert!(ref_key(&d(oci::DOCKER_LIST)).starts_with("index-sha256:"));
    assert!(ref_key(&d(oci::DOCKER_CONFIG)).starts_with("config-sha256:"));
    assert!(ref_key(&d(oci::OCI_LAYER_ZSTD)).starts_with("layer-sha256:"));
    assert!(ref_key(&d("text/plain")).starts_with("unknown-sha256:"));
}

fn collect(mut rx: mpsc::Receiver<Progress>) -> Vec<Progress> {
    let mut out = Vec::new();
    while let Ok(p) = rx.try_recv() {
        out.push(p);
    }
    out
}

#[tokio::test]
async fn pull_single_manifest_image() {
    let reg = TestRegistry::start(None);
    let img = OciImage::build(
        &[("hello.txt", b"hello from a layer\n".as_slice())],
        "linux/amd64",
    );
    img.push(&reg, "test/hello:v1", None);
    let env = testutil::Env::new();
    let (tx, rx) = mpsc::channel(1024);
    let reference = format!("{}/test/hello:v1", reg.host());
    let opts = PullOptions {
        platform: Some("linux/amd64".into()),
        ..Default::default()
    };
    let image = env
        .puller()
        .pull("default", &reference, opts.clone(), tx)
        .await
        .expect("pull");
    assert_eq!(image.name, reference);
    let target = image.target();
    assert_eq!(target.digest, img.manifest_digest);
    assert_eq!(target.media_type, oci::OCI_MANIFEST);

    // Content and labels.
    let source = format!("{DISTRIBUTION_SOURCE_PREFIX}{}", reg.host());
    let m = env
        .content
        .info("default", &img.manifest_digest)
        .await
        .expect("manifest");
    assert_eq!(
        m.labels[&format!("{GC_REF_CONTENT_PREFIX}config")],
        img.config_digest
    );
    assert_eq!(
        m.labels[&format!("{GC_REF_CONTENT_PREFIX}l.0")],
        img.layer_digests[0]
    );
    assert_eq!(m.labels[&source], "test/hello");
    for d in [&img.config_digest, &img.layer_digests[0]] {
        let info = env.content.info("default", d).await.expect("blob");
        assert_eq!(info.labels[&source], "test/hello");
        let path = env.content.blob_path(d).expect("path");
        assert_eq!(testutil::sha256_file(&path), *d);
    }
    // The lease is gone; nothing is left in ingest.
    assert!(
        env.leases
            .list("default", crate::filters::Filter::always())
            .await
            .expect("leases")
            .is_empty()
    );
    assert!(
        env.content
            .list_statuses("default", crate::filters::Filter::always())
            .await
            .expect("ingests")
            .is_empty()
    );

    let reports = collect(rx);
    for d in [&img.config_digest, &img.layer_digests[0]] {
        assert!(
            reports
                .iter()
                .any(|p| &p.digest == d && p.state == ProgressState::Done),
            "{reports:?}"
        );
    }

    // A second pull fetches nothing and keeps the record.
    let (tx, rx) = mpsc::channel(1024);
    let again = env
        .puller()
        .pull("default", &reference, opts, tx)
        .await
        .expect("again");
    assert_eq!(again.target().digest, img.manifest_digest);
    let reports = collect(rx);
    assert!(
        reports
            .iter()
            .filter(|p| p.state != ProgressState::Waiting)
            .all(|p| p.state == ProgressState::Exists),
        "{reports:?}"
    );
    // A platform the image is not for.
    let (tx, _rx) = mpsc::channel(16);
    let err = env
        .puller()
        .pull(
            "other",
            &reference,
            PullOptions {
                platform: Some("linux/s390x".into()),
                ..Default::default()
            },
            tx,
        )
        .await
        .expect_err("wrong platform");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("linux/amd64"), "{err}");
}

#[tokio::test]
async fn pull_index_selects_platforms() {
    let reg = TestRegistry::start(None);
    let idx = testutil::OciIndex::build(&["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    idx.push(&reg, "multi/app:1");
    let env = testutil::Env::new();
    let reference = format!("{}/multi/app:1", reg.host());

    let (tx, _rx) = mpsc::channel(1024);
    let image = env
        .puller()
        .pull(
            "ns1",
            &reference,
            PullOptions {
                platform: Some("linux/arm64".into()),
                ..Default::default()
            },
            tx,
        )
        .await
        .expect("pull arm64");
    assert_eq!(image.target().digest, idx.index_digest);
    assert_eq!(image.target().media_type, oci::OCI_INDEX);
    let arm64 = &idx.images[1];
    let info = env
        .content
        .info("ns1", &idx.index_digest)
        .await
        .expect("index");
    assert_eq!(
        info.labels[&format!("{GC_REF_CONTENT_PREFIX}m.0")],
        arm64.manifest_digest
    );
    assert!(
        !info
            .labels
            .contains_key(&format!("{GC_REF_CONTENT_PREFIX}m.1"))
    );
    assert!(
        env.content
            .info("ns1", &arm64.layer_digests[0])
            .await
            .is_ok()
    );
    assert!(
        env.content
            .info("ns1", &idx.images[0].manifest_digest)
            .await
            .is_err()
    );

    // The host platform by default (this machine is one of the three).
    let (tx, _rx) = mpsc::channel(1024);
    env.puller()
        .pull("ns2", &reference, PullOptions::default(), tx)
        .await
        .expect("pull host");
    let host = oci::host_platform().to_string();
    let pos = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
        .iter()
        .position(|p| *p == host)
        .expect("known host");
    assert!(
        env.content
            .info("ns2", &idx.images[pos].manifest_digest)
            .await
            .is_ok()
    );

    // Every platform.
    let (tx, _rx) = mpsc::channel(1024);
    env.puller()
        .pull(
            "ns3",
            &reference,
            PullOptions {
                all_platforms: true,
                ..Default::default()
            },
            tx,
        )
        .await
        .expect("pull all");
    let info = env
        .content
        .info("ns3", &idx.index_digest)
        .await
        .expect("index");
    for (i, im) in idx.images.iter().enumerate() {
        assert_eq!(
            info.labels[&format!("{GC_REF_CONTENT_PREFIX}m.{i}")],
            im.manifest_digest
        );
        assert!(env.content.info("ns3", &im.layer_digests[0]).await.is_ok());
    }

    // A platform the index does not have: the error lists what it has.
    let (tx, _rx) = mpsc::channel(16);
    let err = env
        .puller()
        .pull(
            "ns4",
            &reference,
            PullOptions {
                platform: Some("linux/riscv64".into()),
                ..Default::default()
            },
            tx,
        )
        .await
        .expect_err("no riscv64");
    assert!(err.is_not_found(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("linux/amd64, linux/arm64, linux/arm/v7"),
        "{msg}"
    );
}

#[tokio::test]
async fn pull_resumes_an_interrupted_blob() {
    let reg = TestRegistry::start(None);
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let img = OciImage::build(&[("big.bin", big.as_slice())], "linux/amd64");
    img.push(&reg, "resume/me:latest", None);
    let env = testutil::Env::new();
    let layer = img.layer_digests[0].clone();
    let layer_bytes = std::fs::read(img.blob_path(&layer)).expect("layer");
    let half = layer_bytes.len() / 2;
    let desc = Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: layer.clone(),
        size: layer_bytes.len() as i64,
        annotations: BTreeMap::new(),
    };
    // An earlier pull stopped half-way through the layer.
    let mut w = env
        .content
        .writer("default", &ref_key(&desc), desc.size, &layer, None)
        .await
        .expect("writer");
    w.write(layer_bytes[..half].to_vec()).await.expect("write");
    drop(w);

    let (tx, rx) = mpsc::channel(4096);
    let reference = format!("{}/resume/me", reg.host());
    env.puller()
        .pull(
            "default",
            &reference,
            PullOptions {
                platform: Some("linux/amd64".into()),
                ..Default::default()
            },
            tx,
        )
        .await
        .expect("pull");
    let reports = collect(rx);
    let first = reports
        .iter()
        .find(|p| p.digest == layer && p.state == ProgressState::Downloading)
        .expect("downloading report");
    assert_eq!(first.offset, half as i64, "resumed at the stored offset");
    let info = env
        .content
        .info("default", &layer)
        .await
        .expect("layer stored");
    assert_eq!(info.size, layer_bytes.len() as i64);
    assert_eq!(
        testutil::sha256_file(&env.content.blob_path(&layer).expect("path")),
        layer
    );

    // Garbage in the ingest: the commit notices and names both digests; nothing stays.
    let env = testutil::Env::new();
    let mut w = env
        .content
        .writer("default", &ref_key(&desc), desc.size, &layer, None)
        .await
        .expect("writer");
    w.write(vec![0u8; half]).await.expect("write");
    drop(w);
    let (tx, _rx) = mpsc::channel(4096);
    let err = env
        .puller()
        .pull(
            "default",
            &reference,
            PullOptions {
                platform: Some("linux/amd64".into()),
                ..Default::default()
            },
            tx,
        )
        .await
        .expect_err("corrupt ingest");
    let msg = err.to_string();
    assert!(
        msg.contains(&layer) && msg.contains("unexpected commit digest"),
        "{msg}"
    );
    // The retry starts clean and succeeds.
    let (tx, _rx) = mpsc::channel(4096);
    env.puller()
        .pull(
            "default",
            &reference,
            PullOptions {
                platform: Some("linux/amd64".into()),
                ..Default::default()
            },
            tx,
        )
        .await
        .expect("retry");
}

#[tokio::test]
async fn pull_errors_name_the_registry_answer() {
    let reg = TestRegistry::start(Some(("alice", "wonderland")));
    let img = OciImage::build(&[("a", b"a".as_slice())], "linux/amd64");
    img.push(&reg, "private/app:1", Some(("alice", "wonderland")));
    let env = testutil::Env::new();
    let reference = format!("{}/private/app:1", reg.host());
    let opts = PullOptions {
        platform: Some("linux/amd64".into()),
        ..Default::default()
    };

    // No credentials.
    let (tx, _rx) = mpsc::channel(64);
    let err = env
        .puller()
        .pull("default", &reference, opts.clone(), tx)
        .await
        .expect_err("anonymous");
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    assert!(err.to_string().contains("unauthorized"), "{err}");

    // Wrong password.
    let creds = crate::registry::auth::Credentials {
        username: "alice".into(),
        password: "wrong".into(),
    };
    crate::registry::auth::store(&env.credentials, &reg.host(), &creds).expect("store");
    let (tx, _rx) = mpsc::channel(64);
    let err = env
        .puller()
        .pull("default", &reference, opts.clone(), tx)
        .await
        .expect_err("wrong password");
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("401") && msg.contains("rejected"), "{msg}");

    // Right password.
    let creds = crate::registry::auth::Credentials {
        username: "alice".into(),
        password: "wonderland".into(),
    };
    crate::registry::auth::store(&env.credentials, &reg.host(), &creds).expect("store");
    let (tx, _rx) = mpsc::channel(64);
    let image = env
        .puller()
        .pull("default", &reference, opts.clone(), tx)
        .await
        .expect("authorized");
    assert_eq!(image.target().digest, img.manifest_digest);

    // Unknown tag and unknown repository.
    for missing in ["private/app:nope", "private/nothing:1"] {
        let (tx, _rx) = mpsc::channel(64);
        let err = env
            .puller()
            .pull(
                "default",
                &format!("{}/{missing}", reg.host()),
                opts.clone(),
                tx,
            )
            .await
            .expect_err("missing");
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("404"), "{err}");
    }

    // Nothing listening.
    let (tx, _rx) = mpsc::channel(64);
    let err = env
        .puller()
        .pull(
            "default",
            &format!("127.0.0.1:{}/x/y:1", testutil::free_port()),
            opts.clone(),
            tx,
        )
        .await
        .expect_err("unreachable");
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    // Bad reference.
    let (tx, _rx) = mpsc::channel(64);
    let err = env
        .puller()
        .pull("default", "Not/Valid", opts, tx)
        .await
        .expect_err("invalid");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

/// A layer another client stores (under its own ref, as `ctr` does through Content.Write)
/// while the pull downloads it: the pull's commit finds it there and the pull succeeds,
/// the blob marked with the pull's source, as containerd's fetch treats AlreadyExists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layer_stored_meanwhile_by_another_writer() {
    use std::sync::{Mutex, mpsc as std_mpsc};
    use testutil::{Answer, ScriptedServer};
    let data: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let img = OciImage::build(&[("data", data.as_slice())], "linux/amd64");
    let layer = img.layer_digests[0].clone();
    let layer_bytes = std::fs::read(img.blob_path(&layer)).expect("layer");
    let mut blobs = std::collections::HashMap::new();
    for d in [&img.manifest_digest, &img.config_digest, &layer] {
        blobs.insert(d.clone(), std::fs::read(img.blob_path(d)).expect("blob"));
    }
    let manifest = img.manifest_digest.clone();
    // The layer's GET tells the test, then waits for its word.
    let (asked_tx, asked_rx) = std_mpsc::channel::<()>();
    let (go_tx, go_rx) = std_mpsc::channel::<()>();
    let (asked_tx, go_rx) = (Mutex::new(asked_tx), Mutex::new(go_rx));
    let held_layer = layer.clone();
    let server = ScriptedServer::start(move |req, _| {
        let path = req.target.split('?').next().unwrap_or_default();
        let object = path.rsplit('/').next().unwrap_or_default();
        let key = if object == "v1" {
            manifest.clone()
        } else {
            object.to_string()
        };
        if key == held_layer && req.method == "GET" {
            let _ = asked_tx.lock().expect("lock").send(());
            let _ = go_rx.lock().expect("lock").recv();
        }
        match blobs.get(&key) {
            Some(b) if path.contains("/manifests/") => Answer::new(200, b.clone())
                .header("Content-Type", oci::OCI_MANIFEST)
                .header("Docker-Content-Digest", &key),
            Some(b) => Answer::new(200, b.clone()),
            None => Answer::new(
                404,
                r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#,
            ),
        }
    })
    .await;
    let env = testutil::Env::new();
    let reference = format!("{}/app:v1", server.host());
    let (tx, rx) = mpsc::channel(4096);
    let puller = env.puller();
    let opts = PullOptions {
        platform: Some("linux/amd64".into()),
        ..Default::default()
    };
    let pull = tokio::spawn(async move { puller.pull("default", &reference, opts, tx).await });

    tokio::task::spawn_blocking(move || asked_rx.recv())
        .await
        .expect("join")
        .expect("the pull asked for the layer");
    let mut other = env
        .content
        .writer(
            "default",
            "layer-other-client",
            layer_bytes.len() as i64,
            &layer,
            None,
        )
        .await
        .expect("writer of the other client");
    other.write(layer_bytes.clone()).await.expect("write");
    other
        .commit(layer_bytes.len() as i64, &layer, BTreeMap::new(), None)
        .await
        .expect("the other client's commit");
    go_tx.send(()).expect("let the layer go");

    pull.await.expect("join").expect("pull");
    let reports = collect(rx);
    assert!(
        reports
            .iter()
            .any(|p| p.digest == layer && p.state == ProgressState::Exists),
        "{reports:?}"
    );
    let info = env.content.info("default", &layer).await.expect("layer");
    assert!(
        info.labels
            .iter()
            .any(|(k, v)| k.starts_with(DISTRIBUTION_SOURCE_PREFIX) && v == "app"),
        "{:?}",
        info.labels
    );
    assert!(
        env.content
            .list_statuses("default", crate::filters::Filter::always())
            .await
            .expect("ingests")
            .is_empty(),
        "an ingest was left"
    );
}

#[tokio::test]
async fn bearer_tokens_and_a_registry_that_ignores_ranges() {
    use base64::Engine;
    use testutil::{Answer, ScriptedServer};
    let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_be_bytes()).collect();
    let img = OciImage::build(&[("big", big.as_slice())], "linux/amd64");
    let mut blobs = std::collections::HashMap::new();
    for d in [
        &img.manifest_digest,
        &img.config_digest,
        &img.layer_digests[0],
    ] {
        blobs.insert(d.clone(), std::fs::read(img.blob_path(d)).expect("blob"));
    }
    let manifest = img.manifest_digest.clone();
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("carol:s3cret")
    );
    let server = ScriptedServer::start(move |req, port| {
        let path = req.target.split('?').next().unwrap_or_default();
        if path == "/token" {
            if req.headers.get("authorization") != Some(&good) {
                return Answer::new(401, r#"{"details":"bad credentials"}"#);
            }
            if !req.target.contains("scope=repository%3Aapp%3Apull") {
                return Answer::new(400, "scope missing");
            }
            return Answer::new(200, r#"{"token":"t0k","expires_in":300}"#);
        }
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer t0k") {
            return Answer::new(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#)
                .header(
                    "WWW-Authenticate",
                    &format!(
                        "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"scripted\",scope=\"repository:app:pull\""
                    ),
                );
        }
        let object = path.rsplit('/').next().unwrap_or_default();
        let key = if object == "v1" { manifest.clone() } else { object.to_string() };
        match blobs.get(&key) {
            // Ranges are ignored: always the whole blob, 200.
            Some(b) if path.contains("/manifests/") => Answer::new(200, b.clone())
                .header("Content-Type", oci::OCI_MANIFEST)
                .header("Docker-Content-Digest", &key),
            Some(b) => Answer::new(200, b.clone()),
            None => Answer::new(404, r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#),
        }
    })
    .await;
    let reference = format!("{}/app:v1", server.host());
    let opts = PullOptions {
        platform: Some("linux/amd64".into()),
        ..Default::default()
    };
    let env = testutil::Env::new();

    // Wrong password: the token endpoint's refusal is named.
    let bad = crate::registry::auth::Credentials {
        username: "carol".into(),
        password: "nope".into(),
    };
    crate::registry::auth::store(&env.credentials, &server.host(), &bad).expect("store");
    let (tx, _rx) = mpsc::channel(64);
    let err = env
        .puller()
        .pull("default", &reference, opts.clone(), tx)
        .await
        .expect_err("bad token");
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    assert!(
        err.to_string().contains("unauthorized: fetching token"),
        "{err}"
    );

    let creds = crate::registry::auth::Credentials {
        username: "carol".into(),
        password: "s3cret".into(),
    };
    crate::registry::auth::store(&env.credentials, &server.host(), &creds).expect("store");
    // Half of the layer from an earlier attempt.
    let layer = img.layer_digests[0].clone();
    let layer_bytes = std::fs::read(img.blob_path(&layer)).expect("layer");
    let desc = Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: layer.clone(),
        size: layer_bytes.len() as i64,
        annotations: BTreeMap::new(),
    };
    let mut w = env
        .content
        .writer("default", &ref_key(&desc), desc.size, &layer, None)
        .await
        .expect("writer");
    w.write(layer_bytes[..layer_bytes.len() / 2].to_vec())
        .await
        .expect("write");
    drop(w);

    let before = server.requests().len();
    let (tx, rx) = mpsc::channel(4096);
    let image = env
        .puller()
        .pull("default", &reference, opts, tx)
        .await
        .expect("pull");
    assert_eq!(image.target().digest, img.manifest_digest);
    let reports = collect(rx);
    let first = reports
        .iter()
        .find(|p| p.digest == layer && p.state == ProgressState::Downloading)
        .expect("downloading report");
    assert_eq!(
        first.offset, 0,
        "the range was ignored, so the ingest started over"
    );
    assert_eq!(
        testutil::sha256_file(&env.content.blob_path(&layer).expect("path")),
        layer
    );
    let seen = &server.requests()[before..];
    let ranged = seen
        .iter()
        .find(|r| r.target.ends_with(&layer))
        .expect("layer request");
    assert!(
        ranged
            .headers
            .get("range")
            .is_some_and(|r| r.starts_with("bytes=")),
        "{ranged:?}"
    );
    let tokens = seen
        .iter()
        .filter(|r| r.target.starts_with("/token"))
        .count();
    assert_eq!(
        tokens, 1,
        "one token, reused for every request of the scope"
    );
}

#[tokio::test]
async fn pull_through_mirrors_in_hosts_toml() {
    let upstream = TestRegistry::start(None);
    let mirror = TestRegistry::start(None);
    let img = OciImage::build(&[("m", b"mirrored".as_slice())], "linux/amd64");
    // Only the mirror has the image.
    img.push(&mirror, "lib/app:1", None);
    let env = testutil::Env::new();
    let dir = env.hosts_dir.join(upstream.host());
    std::fs::create_dir_all(&dir).expect("mkdir");
    let dead = testutil::free_port();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n\n\
             [host.\"http://127.0.0.1:{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.host(),
            mirror.host()
        ),
    )
    .expect("hosts.toml");
    let reference = format!("{}/lib/app:1", upstream.host());
    let (tx, _rx) = mpsc::channel(1024);
    let image = env
        .puller()
        .pull(
            "default",
            &reference,
            PullOptions {
                platform: Some("linux/amd64".into()),
                ..Default::default()
            },
            tx,
        )
        .await
        .expect("pull via mirror");
    assert_eq!(image.name, reference);
    assert_eq!(image.target().digest, img.manifest_digest);
    let info = env
        .content
        .info("default", &img.layer_digests[0])
        .await
        .expect("layer");
    // The source is the registry the reference names, not the mirror.
    assert_eq!(
        info.labels[&format!("{DISTRIBUTION_SOURCE_PREFIX}{}", upstream.host())],
        "lib/app"
    );
    // Nobody has this tag; as in containerd, the first error other than a 404 (the dead
    // mirror's) is the one reported.
    let (tx, _rx) = mpsc::channel(64);
    let err = env
        .puller()
        .pull(
            "default",
            &format!("{}/lib/app:2", upstream.host()),
            PullOptions::default(),
            tx,
        )
        .await
        .expect_err("missing everywhere");
    assert!(
        matches!(err, Error::Unavailable(_)),
        "the first non-404 error wins: {err}"
    );
}

#[tokio::test]
async fn pull_over_tls_with_a_configured_ca() {
    let certs = tempfile::tempdir().expect("tmp");
    let (cert, key) = testutil::self_signed_cert(certs.path());
    let reg = TestRegistry::start_tls(&cert, &key);
    let img = OciImage::build(&[("tls", b"over tls".as_slice())], "linux/amd64");
    img.push(&reg, "secure/app:1", None);
    let reference = format!("{}/secure/app:1", reg.host());
    let opts = PullOptions {
        platform: Some("linux/amd64".into()),
        ..Default::default()
    };
    let env = testutil::Env::new();
    let dir = env.hosts_dir.join(reg.host());
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(&cert, dir.join("ca.pem")).expect("copy ca");
    let write = |extra: &str| {
        std::fs::write(
            dir.join("hosts.toml"),
            format!("server = \"https://{}\"\n{extra}", reg.host()),
        )
        .expect("hosts.toml")
    };

    // Verified against the configured CA.
    write("ca = \"ca.pem\"\n");
    let (tx, _rx) = mpsc::channel(1024);
    let image = env
        .puller()
        .pull("a", &reference, opts.clone(), tx)
        .await
        .expect("pull with ca");
    assert_eq!(image.target().digest, img.manifest_digest);

    // Without it the certificate is refused...
    write("");
    let (tx, _rx) = mpsc::channel(1024);
    let err = env
        .puller()
        .pull("b", &reference, opts.clone(), tx)
        .await
        .expect_err("unknown issuer");
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // ...unless verification is off.
    write("skip_verify = true\n");
    let (tx, _rx) = mpsc::channel(1024);
    env.puller()
        .pull("c", &reference, opts.clone(), tx)
        .await
        .expect("pull with skip_verify");

    // With no hosts.toml, a loopback registry is reached over HTTPS (unverified, as
    // containerd does for loopback) without falling back to HTTP.
    std::fs::remove_file(dir.join("hosts.toml")).expect("rm");
    let (tx, _rx) = mpsc::channel(1024);
    env.puller()
        .pull("d", &reference, opts, tx)
        .await
        .expect("pull loopback default");
}
