//! Tests of the registry client that need no registry: digests, endpoint URLs.

use super::*;

#[test]
fn verify_names_both_digests() {
    let data = b"{}";
    let good = Descriptor {
        media_type: media::OCI_MANIFEST.into(),
        digest: sha256_of(data),
        size: 2,
        annotations: Default::default(),
    };
    assert!(verify(data, &good).is_ok());
    let other = sha256_of(b"other");
    let bad = Descriptor {
        digest: other.clone(),
        ..good.clone()
    };
    let err = verify(data, &bad).expect_err("mismatch").to_string();
    assert!(err.contains(&other) && err.contains(&good.digest), "{err}");
    let short = Descriptor {
        size: 3,
        ..good.clone()
    };
    assert!(verify(data, &short).is_err());
}

#[tokio::test]
async fn endpoint_urls() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("docker.io")).expect("mkdir");
    std::fs::write(
        dir.path().join("docker.io/hosts.toml"),
        "[host.\"http://127.0.0.1:1/mirror\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
    )
    .expect("write");
    let c = RegistryClient::new(
        "docker.io",
        &ClientOptions {
            hosts_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await
    .expect("client");
    let urls: Vec<String> = c
        .endpoints
        .iter()
        .map(|e| {
            e.url("docker.io", "library/busybox", "manifests/latest")
                .map(|u| u.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        urls,
        [
            "http://127.0.0.1:1/mirror/v2/library/busybox/manifests/latest?ns=docker.io",
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest",
        ]
    );
    // The mirror cannot push, and the server is not reachable from here: push picks the
    // server, without trying the mirror.
    assert_eq!(
        c.push_endpoint().map(|e| e.host()).ok().as_deref(),
        Some("registry-1.docker.io")
    );
}

#[test]
fn servers_as_clients_name_them() {
    assert_eq!(server_host(""), "docker.io");
    assert_eq!(server_host("http://127.0.0.1:5000/"), "127.0.0.1:5000");
    assert_eq!(server_host("https://index.docker.io/v1/"), "docker.io");
    assert_eq!(server_host("localhost:5000"), "localhost:5000");
}
