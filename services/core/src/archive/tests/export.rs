//! Exporting images, and importing what was exported.

use super::*;

#[tokio::test]
async fn export_delete_import_round_trip() {
    let env = env();
    let m = env.image_manifest("amd64", "hello.txt").await;
    let name = "docker.io/library/tiny:1.0";
    env.create_image(name, plain(&m)).await;
    let out = env.path("tiny.tar");
    env.archives
        .export(NS, &[name.to_string()], &out, ExportOptions::default())
        .await
        .expect("export");

    let ms = members(&out);
    let names: Vec<&str> = ms.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names[0], "blobs/");
    assert_eq!(names[1], "blobs/sha256/");
    assert_eq!(names[5..], ["index.json", "manifest.json", "oci-layout"]);
    assert_eq!(
        member(&ms, "oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: serde_json::Value =
        serde_json::from_slice(member(&ms, "index.json")).expect("index");
    assert_eq!(index["mediaType"], oci::OCI_INDEX);
    assert_eq!(index["manifests"][0]["digest"], m.digest.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"][oci::ANNOTATION_IMAGE_NAME],
        name
    );
    assert_eq!(
        index["manifests"][0]["annotations"][oci::ANNOTATION_REF_NAME],
        "1.0"
    );
    let manifest = env.manifest(&m.digest).await;
    let docker: Vec<DockerEntry> =
        serde_json::from_slice(member(&ms, "manifest.json")).expect("manifest.json");
    assert_eq!(docker.len(), 1);
    assert_eq!(docker[0].config, blob_member(&manifest.config.digest));
    assert_eq!(docker[0].repo_tags, Some(vec!["tiny:1.0".to_string()]));
    assert_eq!(
        docker[0].layers,
        Some(vec![blob_member(&manifest.layers[0].digest)])
    );
    // Every blob is there with its bytes.
    for d in [
        &m.digest,
        &manifest.config.digest,
        &manifest.layers[0].digest,
    ] {
        assert_eq!(member(&ms, &blob_member(d)), env.read(d).await.as_slice());
    }
    // No temporary file is left beside the archive.
    let left: Vec<_> = fs::read_dir(env.dir())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(left.is_empty());

    env.wipe().await;
    let imported = env
        .archives
        .import(NS, &out, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, name);
    let target = imported[0].target();
    assert_eq!(target.digest, m.digest);
    assert_eq!(target.size, m.size);
    assert_eq!(target.media_type, oci::OCI_MANIFEST);
    assert_eq!(env.image_names().await, [name]);
    // The blobs are back, verified, and the manifest holds them for the GC.
    let info = env.content.info(NS, &m.digest).await.expect("manifest");
    assert_eq!(
        info.labels.get(GC_CONFIG),
        Some(&manifest.config.digest),
        "{:?}",
        info.labels
    );
    assert_eq!(
        info.labels.get("containerd.io/gc.ref.content.l.0"),
        Some(&manifest.layers[0].digest)
    );
    assert_eq!(
        env.content
            .list(NS, Filter::always())
            .await
            .expect("list")
            .len(),
        3
    );

    // Importing again updates the image in place.
    let again = env
        .archives
        .import(NS, &out, ImportOptions::default())
        .await
        .expect("import again");
    assert_eq!(again[0].target().digest, m.digest);
}

#[tokio::test]
async fn two_images_share_blobs_and_both_come_back() {
    let env = env();
    let a = env.image_manifest("amd64", "a.txt").await;
    let b = env.image_manifest("amd64", "b.txt").await;
    env.create_image("docker.io/library/a:latest", plain(&a))
        .await;
    env.create_image("example.com/team/b:2", plain(&b)).await;
    // A third name for the same manifest as a.
    env.create_image("docker.io/library/a:again", plain(&a))
        .await;
    let out = env.path("two.tar");
    let names = [
        "docker.io/library/a:latest".to_string(),
        "example.com/team/b:2".to_string(),
        "docker.io/library/a:again".to_string(),
    ];
    env.archives
        .export(NS, &names, &out, ExportOptions::default())
        .await
        .expect("export");
    let ms = members(&out);
    let blobs: Vec<&str> = ms
        .iter()
        .map(|(n, _, _)| n.as_str())
        .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 13)
        .collect();
    // Two manifests, two configs (the arch is the same but the diff ids differ), two layers.
    assert_eq!(blobs.len(), 6, "{blobs:?}");
    let unique: HashSet<&&str> = blobs.iter().collect();
    assert_eq!(unique.len(), blobs.len());
    let docker: Vec<DockerEntry> =
        serde_json::from_slice(member(&ms, "manifest.json")).expect("manifest.json");
    assert_eq!(docker.len(), 2);
    assert_eq!(
        docker[0].repo_tags,
        Some(vec!["a:latest".to_string(), "a:again".to_string()])
    );
    assert_eq!(
        docker[1].repo_tags,
        Some(vec!["example.com/team/b:2".to_string()])
    );

    env.wipe().await;
    let imported = env
        .archives
        .import(NS, &out, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(imported.len(), 3);
    let mut got: Vec<(String, String)> = imported
        .iter()
        .map(|i| (i.name.clone(), i.target().digest))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("docker.io/library/a:again".to_string(), a.digest.clone()),
            ("docker.io/library/a:latest".to_string(), a.digest.clone()),
            ("example.com/team/b:2".to_string(), b.digest.clone()),
        ]
    );
}

#[tokio::test]
async fn multi_platform_index_by_platform() {
    let env = env();
    let amd = env.image_manifest("amd64", "a").await;
    let arm = env.image_manifest("arm64", "b").await;
    let index = env.index_of(&[amd.clone(), arm.clone()]).await;
    let name = "docker.io/library/multi:1";
    env.create_image(name, index.clone()).await;
    let arm_manifest = env.manifest(&arm.digest).await;

    // Everything: both manifests, and no Docker manifest.json (which one would it be?).
    let all = env.path("all.tar");
    env.archives
        .export(NS, &[name.into()], &all, ExportOptions::default())
        .await
        .expect("export all");
    let ms = members(&all);
    assert!(ms.iter().any(|(n, _, _)| *n == blob_member(&amd.digest)));
    assert!(ms.iter().any(|(n, _, _)| *n == blob_member(&arm.digest)));
    assert!(!ms.iter().any(|(n, _, _)| n == "manifest.json"));

    // One platform: the index as it is, that platform's blobs, and a manifest.json.
    let one = env.path("arm.tar");
    env.export_platform(name, &one, Some("linux/arm64"))
        .await
        .expect("export arm64");
    let ms = members(&one);
    assert!(ms.iter().any(|(n, _, _)| *n == blob_member(&index.digest)));
    assert!(ms.iter().any(|(n, _, _)| *n == blob_member(&arm.digest)));
    assert!(!ms.iter().any(|(n, _, _)| *n == blob_member(&amd.digest)));
    let docker: Vec<DockerEntry> =
        serde_json::from_slice(member(&ms, "manifest.json")).expect("manifest.json");
    assert_eq!(docker[0].config, blob_member(&arm_manifest.config.digest));
    assert_eq!(docker[0].repo_tags, Some(vec!["multi:1".to_string()]));

    // A platform the index does not have.
    let none = env.path("none.tar");
    let err = env
        .export_platform(name, &none, Some("linux/s390x"))
        .await
        .expect_err("no such platform");
    assert!(err.is_not_found(), "{err}");
    assert!(!none.exists());

    // The single-platform archive imports: the index is the target, the missing
    // platform is left out and only the present manifest is referenced.
    env.wipe().await;
    let imported = env
        .archives
        .import(NS, &one, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(imported[0].target().digest, index.digest);
    let info = env.content.info(NS, &index.digest).await.expect("index");
    let refs: Vec<(&String, &String)> = info
        .labels
        .iter()
        .filter(|(k, _)| k.starts_with("containerd.io/gc.ref."))
        .collect();
    assert_eq!(
        refs,
        [(&"containerd.io/gc.ref.content.m.0".to_string(), &arm.digest)]
    );
    // Asking for the missing platform on import fails, for the whole import.
    env.wipe().await;
    let err = env
        .archives
        .import(
            NS,
            &one,
            ImportOptions {
                platform: Some("linux/amd64".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("amd64 missing");
    assert!(err.to_string().contains(&amd.digest), "{err}");
    assert!(env.image_names().await.is_empty());

    // The complete archive round-trips with both manifests referenced.
    let imported = env
        .archives
        .import(NS, &all, ImportOptions::default())
        .await
        .expect("import all");
    assert_eq!(imported[0].target().digest, index.digest);
    let info = env.content.info(NS, &index.digest).await.expect("index");
    let refs = info
        .labels
        .keys()
        .filter(|k| k.starts_with(GC_MANIFEST))
        .count();
    assert_eq!(refs, 2, "{:?}", info.labels);
    assert_eq!(
        info.labels.get("containerd.io/gc.ref.content.m.0"),
        Some(&amd.digest)
    );
    assert_eq!(
        info.labels.get("containerd.io/gc.ref.content.m.1"),
        Some(&arm.digest)
    );
}

#[tokio::test]
async fn export_errors_leave_no_file() {
    let env = env();
    let out = env.path("x.tar");
    let err = env
        .archives
        .export(
            NS,
            &["docker.io/library/nope:1".into()],
            &out,
            ExportOptions::default(),
        )
        .await
        .expect_err("unknown image");
    assert!(err.is_not_found(), "{err}");
    // A manifest whose layer the namespace lost.
    let m = env.image_manifest("amd64", "x").await;
    let manifest = env.manifest(&m.digest).await;
    env.create_image("docker.io/library/lost:1", plain(&m))
        .await;
    env.content
        .delete(NS, &manifest.layers[0].digest)
        .await
        .expect("delete layer");
    let err = env
        .archives
        .export(
            NS,
            &["docker.io/library/lost:1".into()],
            &out,
            ExportOptions::default(),
        )
        .await
        .expect_err("lost layer");
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    assert!(
        err.to_string().contains(&manifest.layers[0].digest),
        "{err}"
    );
    assert!(!out.exists());
    // A blob file damaged on disk is caught while copying; the old archive stays.
    fs::write(&out, b"previous").expect("write");
    let config = env
        .content
        .blob_path(&manifest.config.digest)
        .expect("path");
    let mut bytes = fs::read(&config).expect("read");
    bytes[0] ^= 0xff;
    fs::write(&config, bytes).expect("damage");
    let again = env.image_manifest("amd64", "x").await;
    assert_eq!(again.digest, m.digest);
    let err = env
        .archives
        .export(
            NS,
            &["docker.io/library/lost:1".into()],
            &out,
            ExportOptions::default(),
        )
        .await
        .expect_err("damaged config");
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_eq!(fs::read(&out).expect("read"), b"previous");
    let names: Vec<String> = fs::read_dir(env.dir())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}
