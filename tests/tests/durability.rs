//! What berthd acknowledged survives a restart and a crash (kill -9).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::containerd::services::containers::v1 as cpb;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::leases::v1 as lpb;
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_tests::{Daemon, container_record, in_ns, ok};

fn container(id: &str) -> cpb::Container {
    container_record(id)
}

#[tokio::test]
async fn everything_survives_a_clean_restart() {
    let mut d = Daemon::start();
    ok(&d.ctr(&["namespaces", "create", "keep", "a=1"]), "ns");
    let mut ct = ContainersClient::new(d.channel().await);
    let mut c = container("persist");
    c.labels.insert("l".into(), "v".into());
    c.image = "docker.io/library/busybox:latest".into();
    c.extensions.insert(
        "ext".into(),
        prost_types::Any {
            type_url: "t/x".into(),
            value: vec![1, 2, 3],
        },
    );
    let created = ct
        .create(in_ns(
            "keep",
            cpb::CreateContainerRequest { container: Some(c) },
        ))
        .await
        .expect("create")
        .into_inner()
        .container
        .expect("container");
    let mut ls = LeasesClient::new(d.channel().await);
    ls.create(in_ns(
        "keep",
        lpb::CreateRequest {
            id: "hold".into(),
            labels: [("x".to_string(), "y".to_string())].into(),
        },
    ))
    .await
    .expect("lease");
    let digest = format!("sha256:{}", "0".repeat(64));
    ls.add_resource(in_ns(
        "keep",
        lpb::AddResourceRequest {
            id: "hold".into(),
            resource: Some(lpb::Resource {
                id: digest.clone(),
                r#type: "content".into(),
            }),
        },
    ))
    .await
    .expect("add resource");
    ls.add_resource(in_ns(
        "keep",
        lpb::AddResourceRequest {
            id: "hold".into(),
            resource: Some(lpb::Resource {
                id: "sn1".into(),
                r#type: "snapshots/overlayfs".into(),
            }),
        },
    ))
    .await
    .expect("add resource");

    d.restart();

    let mut ct = ContainersClient::new(d.channel().await);
    let got = ct
        .get(in_ns(
            "keep",
            cpb::GetContainerRequest {
                id: "persist".into(),
            },
        ))
        .await
        .expect("get after restart")
        .into_inner()
        .container
        .expect("container");
    assert_eq!(got, created, "container changed across restart");
    let ns = ok(&d.ctr(&["namespaces", "ls"]), "ns ls");
    assert!(
        ns.lines()
            .any(|l| l.starts_with("keep") && l.contains("a=1")),
        "{ns}"
    );
    let mut ls = LeasesClient::new(d.channel().await);
    let leases = ls
        .list(in_ns("keep", lpb::ListRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .leases;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].labels.get("x").map(String::as_str), Some("y"));
    let res = ls
        .list_resources(in_ns(
            "keep",
            lpb::ListResourcesRequest { id: "hold".into() },
        ))
        .await
        .expect("resources")
        .into_inner()
        .resources;
    let res: Vec<(String, String)> = res.into_iter().map(|r| (r.r#type, r.id)).collect();
    assert_eq!(
        res,
        [
            ("content".to_string(), digest),
            ("snapshots/overlayfs".to_string(), "sn1".to_string())
        ]
    );
}

#[test]
fn acknowledged_creates_survive_kill_9_under_concurrent_load() {
    let mut d = Daemon::start();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let address = d.address.clone();
    let mut clients = Vec::new();
    for client in 0..4 {
        let acked = acked.clone();
        let address = address.clone();
        clients.push(rt.spawn(async move {
            let mut ct = ContainersClient::new(berth_tests::channel(&address).await);
            for i in 0.. {
                let id = format!("c{client}-{i}");
                match ct
                    .create(in_ns(
                        "burst",
                        cpb::CreateContainerRequest {
                            container: Some(container(&id)),
                        },
                    ))
                    .await
                {
                    Ok(_) => {
                        acked.lock().expect("lock").insert(id);
                    }
                    Err(_) => return i,
                }
            }
            unreachable!()
        }));
    }
    // Let the burst run, then crash the daemon in the middle of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "burst too slow:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill9();
    for c in clients {
        rt.block_on(c).expect("client task");
    }
    let acked = acked.lock().expect("lock").clone();

    d.restart();
    let listed: BTreeSet<String> = rt.block_on(async {
        let mut ct = ContainersClient::new(d.channel().await);
        ct.list(in_ns("burst", cpb::ListContainersRequest::default()))
            .await
            .expect("list after crash")
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect()
    });
    let lost: Vec<&String> = acked.difference(&listed).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged creates lost after kill -9: {lost:?}",
        lost.len()
    );
    // At most one in-flight create per client may have committed without an ack.
    assert!(
        listed.len() <= acked.len() + 4,
        "listed {} acked {}",
        listed.len(),
        acked.len()
    );
    // The database is usable: a write after recovery works.
    rt.block_on(async {
        let mut ct = ContainersClient::new(d.channel().await);
        ct.create(in_ns(
            "burst",
            cpb::CreateContainerRequest {
                container: Some(container("after")),
            },
        ))
        .await
        .expect("create after recovery");
    });
}
