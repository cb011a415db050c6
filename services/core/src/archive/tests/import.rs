//! Importing archives: Docker `save` archives, damaged and incomplete archives, naming.

use std::io;

use flate2::read::MultiGzDecoder;

use super::*;

#[tokio::test]
async fn docker_save_archive_imports_like_containerd() {
    let env = env();
    let layer = tar_of(&[("etc/motd", b"welcome\n")]);
    let layer_digest = oci::sha256_digest(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}","{layer_digest}"]}}}}"#
    )
    .into_bytes();
    let config_digest = oci::sha256_digest(&config);
    let config_file = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    let manifest_json = format!(
        r#"[{{"Config":"{config_file}","RepoTags":["tiny:latest","example.com/x/y:2"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}}]"#
    );
    // `docker save` links a repeated layer to its first copy.
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("path");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).expect("append");
    };
    add("aaa/VERSION", b"1.0");
    add("aaa/json", b"{}");
    add("aaa/layer.tar", &layer);
    add(&config_file, &config);
    add("manifest.json", manifest_json.as_bytes());
    add("repositories", br#"{"tiny":{"latest":"aaa"}}"#);
    let mut h = tar::Header::new_ustar();
    h.set_path("bbb/layer.tar").expect("path");
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_link_name("../aaa/layer.tar").expect("link");
    h.set_size(0);
    h.set_cksum();
    b.append(&h, io::empty()).expect("symlink");
    let archive = b.into_inner().expect("tar");
    // Compressed as a whole: detected by its magic.
    let path = env.path("save.tar.gz");
    fs::write(&path, gzip(&archive)).expect("write");

    let imported = env
        .archives
        .import(NS, &path, ImportOptions::default())
        .await
        .expect("import");
    let names: Vec<&str> = imported.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["docker.io/library/tiny:latest", "example.com/x/y:2"]
    );
    let target = imported[0].target();
    assert_eq!(target.media_type, oci::DOCKER_MANIFEST);
    assert_eq!(
        target
            .annotations
            .get(oci::ANNOTATION_IMAGE_NAME)
            .map(String::as_str),
        Some("docker.io/library/tiny:latest")
    );
    assert_eq!(
        target
            .annotations
            .get(oci::ANNOTATION_REF_NAME)
            .map(String::as_str),
        Some("latest")
    );
    assert_eq!(imported[1].target().digest, target.digest);
    // The same bytes containerd's importer writes (Go's encoding/json of its struct).
    let want = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{DOCKER_LAYER}","digest":"{layer_digest}","size":{}}},{{"mediaType":"{DOCKER_LAYER}","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len(),
        layer.len()
    );
    assert_eq!(
        String::from_utf8(env.read(&target.digest).await).expect("utf8"),
        want
    );
    assert_eq!(target.digest, oci::sha256_digest(want.as_bytes()));
    let info = env.content.info(NS, &target.digest).await.expect("info");
    assert_eq!(info.labels.get(GC_CONFIG), Some(&config_digest));
    assert_eq!(
        info.labels.get("containerd.io/gc.ref.content.l.0"),
        Some(&layer_digest)
    );
    assert_eq!(
        info.labels.get("containerd.io/gc.ref.content.l.1"),
        Some(&layer_digest)
    );
    // Only the config, the layer and the manifest were stored: not aaa/json, VERSION, ...
    let mut stored: Vec<String> = env
        .content
        .list(NS, Filter::always())
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.digest)
        .collect();
    stored.sort();
    let mut want = vec![
        config_digest.clone(),
        layer_digest.clone(),
        target.digest.clone(),
    ];
    want.sort();
    assert_eq!(stored, want);

    // With compress_blobs the layer is stored gzipped and remembers its diff id.
    let env2 = self::env();
    let imported = env2
        .archives
        .import(
            NS,
            &path,
            ImportOptions {
                compress_blobs: true,
                ..Default::default()
            },
        )
        .await
        .expect("import compressed");
    let manifest = env2.manifest(&imported[0].target().digest).await;
    assert_eq!(manifest.layers[0].media_type, oci::DOCKER_LAYER_GZIP);
    assert_ne!(manifest.layers[0].digest, layer_digest);
    let gz = env2.read(&manifest.layers[0].digest).await;
    let mut plain = Vec::new();
    MultiGzDecoder::new(gz.as_slice())
        .read_to_end(&mut plain)
        .expect("gunzip");
    assert_eq!(plain, layer);
    let info = env2
        .content
        .info(NS, &manifest.layers[0].digest)
        .await
        .expect("info");
    assert_eq!(
        info.labels.get(oci::UNCOMPRESSED_LABEL),
        Some(&layer_digest)
    );
}

#[tokio::test]
async fn docker_archive_missing_layer_or_name() {
    let env = env();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let archive = tar_of(&[
        ("c.json", config),
        (
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["gone/layer.tar"]}]"#,
        ),
    ]);
    let path = env.path("missing.tar");
    fs::write(&path, archive).expect("write");
    let err = env.import_err(&path).await;
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("gone/layer.tar"), "{err}");
    assert!(env.image_names().await.is_empty());
    // Nothing was stored: the check comes before the first blob write.
    assert!(
        env.content
            .list(NS, Filter::always())
            .await
            .expect("list")
            .is_empty()
    );

    let archive = tar_of(&[
        ("c.json", config),
        (
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":null,"Layers":[]}]"#,
        ),
    ]);
    fs::write(&path, archive).expect("write");
    let err = env.import_err(&path).await;
    assert!(err.to_string().contains("image name required"), "{err}");
    let imported = env
        .archives
        .import(
            NS,
            &path,
            ImportOptions {
                base_name: Some("example.com/untagged".into()),
                ..Default::default()
            },
        )
        .await
        .expect("with base name");
    assert_eq!(
        imported[0].name,
        format!("example.com/untagged@{}", imported[0].target().digest)
    );
}

#[tokio::test]
async fn truncated_archive_fails_and_creates_no_image() {
    let env = env();
    let (_, out, _) = env
        .exported("docker.io/library/t:1", "big.bin", "t.tar")
        .await;
    let full = fs::read(&out).expect("read");

    // Cut inside the first blob's data.
    let cut = env.path("cut.tar");
    fs::write(&cut, &full[..512 * 3 + 100]).expect("write");
    let err = env.import_err(&cut).await;
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(env.image_names().await.is_empty());

    // Cut inside the padding after the last file's data.
    fs::write(&cut, &full[..full.len() - 1024 - 300]).expect("write");
    let err = env.import_err(&cut).await;
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(env.image_names().await.is_empty());

    // A cut gzip stream.
    let gz = gzip(&full);
    fs::write(&cut, &gz[..gz.len() / 2]).expect("write");
    let err = env.import_err(&cut).await;
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(env.image_names().await.is_empty());
    // No ingest is left behind.
    assert!(
        env.content
            .list_statuses(NS, Filter::always())
            .await
            .expect("statuses")
            .is_empty()
    );

    // Not an archive at all.
    fs::write(&cut, b"this is not a tar file, not even close to one").expect("write");
    let err = env.import_err(&cut).await;
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[tokio::test]
async fn blob_with_wrong_bytes_fails_and_creates_no_image() {
    let env = env();
    let (_, out, manifest) = env
        .exported("docker.io/library/bad:1", "x", "bad.tar")
        .await;

    let layer = blob_member(&manifest.layers[0].digest);
    let mut ms = members(&out);
    for (name, _, data) in ms.iter_mut() {
        if *name == layer {
            let last = data.len() - 1;
            data[last] ^= 0xff;
        }
    }
    write_members(&out, &ms);
    let err = env.import_err(&out).await;
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    assert!(
        err.to_string().contains(&manifest.layers[0].digest),
        "{err}"
    );
    assert!(err.to_string().contains(&layer), "{err}");
    assert!(env.image_names().await.is_empty());
    assert!(
        env.content
            .info(NS, &manifest.layers[0].digest)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn reference_to_a_missing_blob_fails() {
    let env = env();
    let (m, out, manifest) = env.exported("docker.io/library/m:1", "x", "m.tar").await;
    let ms = members(&out);

    // A manifest whose layer is not in the archive.
    let layer = blob_member(&manifest.layers[0].digest);
    let without: Vec<_> = ms.iter().filter(|(n, _, _)| *n != layer).cloned().collect();
    let path = env.path("nolayer.tar");
    write_members(&path, &without);
    let err = env.import_err(&path).await;
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string().contains(&manifest.layers[0].digest),
        "{err}"
    );
    assert!(err.to_string().contains(&m.digest), "{err}");
    assert!(env.image_names().await.is_empty());

    // index.json naming a manifest that is not there (nor in the namespace: blobs of the
    // failed import above stay, verified).
    env.wipe().await;
    let manifest_member = blob_member(&m.digest);
    let without: Vec<_> = ms
        .iter()
        .filter(|(n, _, _)| *n != manifest_member)
        .cloned()
        .collect();
    let path = env.path("nomanifest.tar");
    write_members(&path, &without);
    let err = env.import_err(&path).await;
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("index.json entry 0"), "{err}");
    assert!(err.to_string().contains(&m.digest), "{err}");
    assert!(env.image_names().await.is_empty());
}

#[tokio::test]
async fn tag_only_names_need_a_base_name() {
    let env = env();
    let m = env.image_manifest("amd64", "x").await;
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"{ANNOTATION_REF_NAME}":"1.0"}}}}]}}"#,
        m.media_type, m.digest, m.size
    );
    let manifest = env.read(&m.digest).await;
    let parsed = env.manifest(&m.digest).await;
    let config = env.read(&parsed.config.digest).await;
    let layer = env.read(&parsed.layers[0].digest).await;
    let archive = tar_of(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", index.as_bytes()),
        (&blob_member(&m.digest), &manifest),
        (&blob_member(&parsed.config.digest), &config),
        (&blob_member(&parsed.layers[0].digest), &layer),
    ]);
    env.wipe().await;
    let path = env.path("tag.tar");
    fs::write(&path, archive).expect("write");
    let err = env.import_err(&path).await;
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("image name required"), "{err}");
    // Naming is checked before any blob is written.
    assert!(
        env.content
            .list(NS, Filter::always())
            .await
            .expect("list")
            .is_empty()
    );

    let imported = env
        .archives
        .import(
            NS,
            &path,
            ImportOptions {
                base_name: Some("example.com/app".into()),
                labels: BTreeMap::from([("origin".to_string(), "archive".to_string())]),
                ..Default::default()
            },
        )
        .await
        .expect("import");
    assert_eq!(imported[0].name, "example.com/app:1.0");
    assert_eq!(imported[0].target().digest, m.digest);
    assert_eq!(
        imported[0].labels.get("origin").map(String::as_str),
        Some("archive")
    );
}
