//! Kubernetes' CRI on berthd (issue 12, the first part): a tonic CRI client drives the
//! RuntimeService and ImageService on berthd's socket, as a kubelet does. A pod with two
//! containers sharing its network (one reaches the other on localhost), its IP reachable
//! from the host, its hosts/resolv.conf/hostname files, a security context seen inside,
//! ExecSync codes and timeouts, CRI logs, images pulled with auth, bad input refused, and
//! everything still there after berthd is killed with -9 and started again.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_proto::runtime::v1 as cri;
use berth_proto::runtime::v1::image_service_client::ImageServiceClient;
use berth_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_tests::fixtures::{Registry, busybox_image};
use berth_tests::{Daemon, TestNetwork, channel, go_build};
use tonic::Code;
use tonic::transport::Channel;

struct Clients {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

async fn clients(d: &Daemon) -> Clients {
    let ch = channel(&d.address).await;
    Clients {
        rt: RuntimeServiceClient::new(ch.clone()),
        img: ImageServiceClient::new(ch),
    }
}

fn pod_config(work: &std::path::Path, name: &str, host_port: i32) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "pod-host".into(),
        log_directory: work.join("logs").display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 8080,
            host_port,
            host_ip: String::new(),
        }],
        labels: BTreeMap::from([("app".into(), "web".into())]),
        annotations: BTreeMap::from([("note".into(), "kept".into())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            sysctls: BTreeMap::from([("net.ipv4.ip_unprivileged_port_start".into(), "80".into())]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: BTreeMap::from([("role".into(), name.into())]),
        ..Default::default()
    }
}

/// CreateContainer then StartContainer in pod `sandbox`: the container's id.
async fn run_container(
    c: &mut Clients,
    sandbox: &str,
    pod: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    let name = config.metadata.clone().map(|m| m.name).unwrap_or_default();
    let id =
        c.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
        .into_inner()
        .container_id;
    c.rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
    id
}

async fn exec(c: &mut Clients, id: &str, cmd: &[&str], timeout: i64) -> cri::ExecSyncResponse {
    c.rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
    .into_inner()
}

/// The streaming URL of an Attach to a container's stdin and stdout.
async fn attach_url(c: &mut Clients, id: &str) -> String {
    c.rt.attach(cri::AttachRequest {
        container_id: id.into(),
        stdin: true,
        stdout: true,
        ..Default::default()
    })
    .await
    .expect("Attach")
    .into_inner()
    .url
}

async fn sandbox_state(c: &mut Clients, id: &str) -> cri::PodSandboxStatus {
    c.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .expect("PodSandboxStatus")
    .into_inner()
    .status
    .expect("status")
}

async fn container_state(c: &mut Clients, id: &str) -> cri::ContainerStatus {
    c.rt.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("status")
}

/// A GET of `path` on `host:port`: the body, once something answers (10 s at most).
fn http_get(host: &str, port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect((host, port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut out = String::new();
            if s.read_to_string(&mut out).is_ok() && !out.is_empty() {
                return out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing answers on {host}:{port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_through_the_cri() {
    let work = tempfile::Builder::new()
        .prefix("berth-cri-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let w = work.path().to_path_buf();
    let net = TestNetwork::claim();
    let cni = net.cni_conf_dir(&w);
    let bb = busybox_image(&w.join("bb"), "1.35");
    let reg = Registry::start_with_auth("kube", "s3cret");
    reg.push_layout(&bb.layout, "lib/busybox:1.35");
    let image = reg.reference("lib/busybox:1.35");
    let mut d =
        Daemon::start_with_config(&format!("[cri]\ncni_conf_dir = \"{}\"\n", cni.display()));
    let mut c = clients(&d).await;

    // Version and Status.
    let v =
        c.rt.version(cri::VersionRequest::default())
            .await
            .expect("Version")
            .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("berth", "v1")
    );
    let status =
        c.rt.status(cri::StatusRequest { verbose: true })
            .await
            .expect("Status")
            .into_inner();
    let conditions = status.status.expect("status").conditions;
    assert!(conditions.iter().all(|c| c.status), "{conditions:?}");
    assert!(status.info["config"].contains("cniConfDir"));

    // Images: a pull without credentials is refused; with them it lands, by name and id.
    let pull = |auth: Option<cri::AuthConfig>| cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    };
    assert!(c.img.pull_image(pull(None)).await.is_err());
    let image_id = c
        .img
        .pull_image(pull(Some(cri::AuthConfig {
            username: "kube".into(),
            password: "s3cret".into(),
            ..Default::default()
        })))
        .await
        .expect("PullImage")
        .into_inner()
        .image_ref;
    assert_eq!(image_id, bb.config.digest);
    let listed = c
        .img
        .list_images(cri::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(
        listed
            .iter()
            .any(|i| i.id == image_id && i.repo_tags.contains(&image)),
        "{listed:?}"
    );
    let by_id = c
        .img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image_id.clone(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    assert_eq!(by_id.image.expect("image").repo_tags, vec![image.clone()]);
    assert!(by_id.info["info"].contains("chainID"));

    // A pod: its name is reserved, its IP reachable.
    let host_port = berth_tests::fixtures::free_port();
    let config = pod_config(&w, "web", i32::from(host_port));
    let sandbox =
        c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let again =
        c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a second pod of the same name");
    assert!(again.message().contains("is reserved for"), "{again:?}");
    let st = sandbox_state(&mut c, &sandbox).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    let ip = st.network.expect("network").ip;
    assert!(ip.starts_with(&net.prefix), "{ip}");
    assert_eq!(st.annotations["note"], "kept");
    let listed =
        c.rt.list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: BTreeMap::from([("app".into(), "web".into())]),
                ..Default::default()
            }),
        })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert_eq!(listed.len(), 1);
    let ctr_list = d.ctr(&["-n", "k8s.io", "containers", "ls", "-q"]);
    assert!(String::from_utf8_lossy(&ctr_list.stdout).contains(&sandbox));

    // Two containers: a web server on a mounted directory, a client that reaches it on
    // localhost, as a user, on a read-only root.
    let site = w.join("site");
    std::fs::create_dir_all(&site).expect("mkdir");
    std::fs::write(site.join("index.txt"), "served-in-pod\n").expect("write");
    let mut web = container_config("web", &image, &["httpd", "-f", "-p", "8080", "-h", "/www"]);
    web.mounts.push(cri::Mount {
        container_path: "/www".into(),
        host_path: site.display().to_string(),
        readonly: true,
        ..Default::default()
    });
    let mut client = container_config(
        "client",
        &image,
        &[
            "sh",
            "-c",
            "echo hello-log; echo to-stderr >&2; exec sleep 1000",
        ],
    );
    client.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            readonly_rootfs: true,
            ..Default::default()
        }),
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
    });
    let mut events =
        c.rt.get_container_events(cri::GetEventsRequest::default())
            .await
            .expect("GetContainerEvents")
            .into_inner();
    let mut ids = Vec::new();
    for cfg in [web, client] {
        let id =
            c.rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(cfg),
                sandbox_config: Some(config.clone()),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        assert_eq!(
            container_state(&mut c, &id).await.state,
            cri::ContainerState::ContainerCreated as i32
        );
        c.rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("StartContainer");
        ids.push(id);
    }
    let (web_id, client_id) = (ids[0].clone(), ids[1].clone());
    assert_eq!(
        container_state(&mut c, &client_id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    // One shim for the whole pod.
    let shims: Vec<_> = berth_tests::shim_processes()
        .into_iter()
        .filter(|(_, args)| {
            args.iter()
                .any(|a| a.contains(&d.address.display().to_string()))
        })
        .collect();
    assert_eq!(shims.len(), 1, "{shims:?}");

    // Inside the client: the web server on localhost, the pod's files, its user, its
    // read-only root, its memory limit.
    let mut fetched = String::new();
    for _ in 0..50 {
        let r = exec(
            &mut c,
            &client_id,
            &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.txt"],
            10,
        )
        .await;
        fetched = String::from_utf8_lossy(&r.stdout).into_owned();
        if r.exit_code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(fetched, "served-in-pod\n");
    let r = exec(
        &mut c,
        &client_id,
        &["sh", "-c", "id -u; cat /etc/hostname; hostname; cat /etc/resolv.conf; grep -c localhost /etc/hosts"],
        10,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "1000\npod-host\npod-host\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n2\n"
    );
    let r = exec(&mut c, &client_id, &["touch", "/made"], 10).await;
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{r:?}"
    );
    let r = exec(
        &mut c,
        &client_id,
        &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"],
        10,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        (64u64 << 20).to_string()
    );
    // Exit codes and a timeout.
    assert_eq!(
        exec(&mut c, &client_id, &["sh", "-c", "exit 3"], 0)
            .await
            .exit_code,
        3
    );
    let late =
        c.rt.exec_sync(cri::ExecSyncRequest {
            container_id: client_id.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .expect_err("a timeout");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    // Output beyond 16 MiB is cut there (the kubelet's own cap).
    let big =
        c.rt.clone()
            .max_decoding_message_size(64 << 20)
            .exec_sync(cri::ExecSyncRequest {
                container_id: client_id.clone(),
                cmd: ["head", "-c", "20000000", "/dev/zero"]
                    .map(String::from)
                    .to_vec(),
                timeout: 60,
            })
            .await
            .expect("ExecSync of 20 MB")
            .into_inner();
    assert_eq!((big.stdout.len(), big.exit_code), (16 << 20, 0));
    // A container in another container's PID namespace (TARGET) sees its processes.
    let mut peer = container_config("peer", &image, &["sleep", "1001"]);
    peer.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Target as i32,
                target_id: client_id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let peer_id = run_container(&mut c, &sandbox, &config, peer).await;
    let seen = exec(
        &mut c,
        &peer_id,
        &["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
        10,
    )
    .await;
    let seen = String::from_utf8_lossy(&seen.stdout).into_owned();
    assert!(
        seen.contains("sleep 1000 ") && seen.contains("sleep 1001 "),
        "{seen}"
    );
    c.rt.remove_container(cri::RemoveContainerRequest {
        container_id: peer_id,
    })
    .await
    .expect("RemoveContainer peer");
    // Stats of the containers and of the pod.
    let stats =
        c.rt.container_stats(cri::ContainerStatsRequest {
            container_id: client_id.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let memory = stats.memory.expect("memory");
    assert!(
        memory.working_set_bytes.expect("working set").value > 0,
        "{memory:?}"
    );
    assert!(
        stats
            .cpu
            .expect("cpu")
            .usage_core_nano_seconds
            .expect("cpu")
            .value
            > 0
    );
    assert!(stats.writable_layer.is_some());
    let pod_stats =
        c.rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("stats");
    let linux = pod_stats.linux.expect("linux");
    assert_eq!(linux.containers.len(), 2);
    // The pod's eth0 carried the client's fetches.
    let eth0 = linux
        .network
        .expect("network")
        .default_interface
        .expect("eth0");
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.rx_bytes.expect("rx").value > 0, "{eth0:?}");
    assert!(
        linux
            .process
            .expect("process")
            .process_count
            .expect("count")
            .value
            >= 3
    );
    let listed =
        c.rt.list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: sandbox.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 2);
    // Metrics, as the kubelet reads them with PodAndContainerStatsFromCRI.
    let descriptors =
        c.rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest::default())
            .await
            .expect("ListMetricDescriptors")
            .into_inner()
            .descriptors;
    assert!(
        descriptors
            .iter()
            .any(|d| d.name == "container_memory_working_set_bytes")
    );
    let pods =
        c.rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest::default())
            .await
            .expect("ListPodSandboxMetrics")
            .into_inner()
            .pod_metrics;
    let ours = pods
        .iter()
        .find(|p| p.pod_sandbox_id == sandbox)
        .expect("our pod");
    let client_metrics = ours
        .container_metrics
        .iter()
        .find(|m| m.container_id == client_id)
        .expect("the client's metrics");
    let working_set = client_metrics
        .metrics
        .iter()
        .find(|m| m.name == "container_memory_working_set_bytes")
        .expect("working set");
    assert!(working_set.value.expect("value").value > 0);
    assert_eq!(working_set.label_values[0], "client");
    // New limits, seen in the cgroup at once.
    c.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: client_id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    let r = exec(
        &mut c,
        &client_id,
        &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"],
        10,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        (96u64 << 20).to_string()
    );
    // The events so far: each container created, then started.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event in time")
            .expect("event stream")
            .expect("an event");
        seen.push((e.container_id.clone(), e.container_event_type));
        assert_eq!(e.pod_sandbox_status.expect("pod status").id, sandbox);
    }
    let created = cri::ContainerEventType::ContainerCreatedEvent as i32;
    let started = cri::ContainerEventType::ContainerStartedEvent as i32;
    assert_eq!(
        seen,
        vec![
            (web_id.clone(), created),
            (web_id.clone(), started),
            (client_id.clone(), created),
            (client_id.clone(), started),
        ]
    );
    // The pod's IP from the host, and its host port.
    assert_eq!(http_get(&ip, 8080, "/index.txt"), "served-in-pod\n");
    assert_eq!(
        http_get("127.0.0.1", host_port, "/index.txt"),
        "served-in-pod\n"
    );
    // The client's log, in the CRI format.
    let log = std::fs::read_to_string(w.join("logs/client/0.log")).expect("client log");
    assert!(
        log.lines().any(|l| l.contains(" stdout F hello-log")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains(" stderr F to-stderr")),
        "{log}"
    );

    // A third container: a user by name, berth's default seccomp profile; a Localhost
    // profile file that is not there is refused.
    let mut guarded = container_config("guarded", &image, &["sleep", "1000"]);
    guarded.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_username: "nobody".into(),
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
        resources: None,
    });
    let guarded_id = run_container(&mut c, &sandbox, &config, guarded.clone()).await;
    let r = exec(&mut c, &guarded_id, &["id", "-u"], 10).await;
    assert_eq!(String::from_utf8_lossy(&r.stdout), "65534\n");
    // The same call is allowed without the profile (the client is unconfined): the
    // refusal below is the profile's.
    let free = exec(&mut c, &client_id, &["unshare", "-U", "true"], 10).await;
    assert_eq!(free.exit_code, 0, "{free:?}");
    let r = exec(&mut c, &guarded_id, &["unshare", "-U", "true"], 10).await;
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Operation not permitted"),
        "{r:?}"
    );
    let mut bad_profile = guarded.clone();
    bad_profile.metadata = Some(cri::ContainerMetadata {
        name: "bad-profile".into(),
        attempt: 0,
    });
    if let Some(sc) = bad_profile
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: "/nonexistent/profile.json".into(),
        });
    }
    let refused =
        c.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(bad_profile),
            sandbox_config: Some(config.clone()),
        })
        .await
        .expect_err("a missing seccomp profile");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("failed to load seccomp profile"));

    // Exec and PortForward through the streaming server.
    streaming_checks(&mut c, &client_id, &sandbox).await;

    // Attach: into a container's stdin, out of its output.
    let mut talker = container_config(
        "talker",
        &image,
        &["sh", "-c", "while read l; do echo heard:$l; done"],
    );
    talker.stdin = true;
    let talker_id = run_container(&mut c, &sandbox, &config, talker).await;
    let url = attach_url(&mut c, &talker_id).await;
    let heard = tokio::task::spawn_blocking(move || {
        let mut ws = Ws::connect(&url, "v5.channel.k8s.io").expect("upgrade");
        std::thread::sleep(Duration::from_millis(300));
        ws.send(0, b"one\n");
        let mut out = Vec::new();
        while let Some((ch, data)) = ws.recv() {
            if ch == 1 {
                out.extend(data);
            }
            if String::from_utf8_lossy(&out).contains("heard:one\n") {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("attach stream");
    assert_eq!(heard, "heard:one\n");
    // The client gone, the container goes on.
    assert_eq!(
        container_state(&mut c, &talker_id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let refused =
        c.rt.attach(cri::AttachRequest {
            container_id: client_id.clone(),
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("stdin of a container without it");
    assert_eq!(refused.code(), Code::InvalidArgument);
    c.rt.remove_container(cri::RemoveContainerRequest {
        container_id: talker_id.clone(),
    })
    .await
    .expect("RemoveContainer talker");
    // The same over SPDY, into a container that reads one line (stdin_once): it ends
    // when the container does.
    let mut echoer = container_config("echoer", &image, &["sh", "-c", "read l; echo heard:$l"]);
    echoer.stdin = true;
    echoer.stdin_once = true;
    let echoer_id = run_container(&mut c, &sandbox, &config, echoer).await;
    let url = attach_url(&mut c, &echoer_id).await;
    let v = spdy(
        [
            "exec", "-url", &url, "-stdin", "two\n", "-wait", "300ms", "-stdout",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(v["stdout"], "heard:two\n", "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("Success"),
        "{v}"
    );
    c.rt.remove_container(cri::RemoveContainerRequest {
        container_id: echoer_id,
    })
    .await
    .expect("RemoveContainer echoer");

    // The pod's sysctls and its shared /dev/shm; a container's cpuset, OOM score and a
    // host device.
    let r = exec(
        &mut c,
        &client_id,
        &[
            "sh",
            "-c",
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start; echo shared > /dev/shm/note",
        ],
        10,
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&r.stdout), "80\n", "{r:?}");
    let mut tuned = container_config("tuned", &image, &["sleep", "1000"]);
    tuned.devices.push(cri::Device {
        container_path: "/dev/berth-null".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    });
    tuned.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpuset_cpus: "0".into(),
            oom_score_adj: 500,
            ..Default::default()
        }),
        security_context: None,
    });
    let tuned_id = run_container(&mut c, &sandbox, &config, tuned).await;
    let r = exec(
        &mut c,
        &tuned_id,
        &["sh", "-c", "cat /dev/shm/note /proc/self/oom_score_adj; (cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus); echo written > /dev/berth-null && stat -c '%t:%T' /dev/berth-null"],
        10,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "shared\n500\n0\n1:3\n",
        "{r:?}"
    );
    c.rt.remove_container(cri::RemoveContainerRequest {
        container_id: tuned_id.clone(),
    })
    .await
    .expect("RemoveContainer tuned");

    // The kubelet's log rotation: the log renamed, ReopenContainerLog, new lines in a new
    // file at the same path.
    let ticker = run_container(
        &mut c,
        &sandbox,
        &config,
        container_config(
            "ticker",
            &image,
            &["sh", "-c", "while :; do echo tick; sleep 0.1; done"],
        ),
    )
    .await;
    let log = w.join("logs/ticker/0.log");
    let wait_for_tick = |p: &std::path::Path| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(p)
            .unwrap_or_default()
            .contains("stdout F tick")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no tick in {}",
                p.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for_tick(&log);
    let rotated = w.join("logs/ticker/0.log.20261206-000000");
    std::fs::rename(&log, &rotated).expect("rotate");
    c.rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: ticker.clone(),
    })
    .await
    .expect("ReopenContainerLog");
    wait_for_tick(&log);
    let before = std::fs::metadata(&rotated).expect("rotated").len();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(std::fs::metadata(&rotated).expect("rotated").len(), before);
    c.rt.remove_container(cri::RemoveContainerRequest {
        container_id: ticker.clone(),
    })
    .await
    .expect("RemoveContainer ticker");
    let stopped =
        c.rt.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: ticker.clone(),
        })
        .await
        .expect_err("a removed container");
    assert_eq!(stopped.code(), Code::NotFound);

    // Bad input.
    let missing =
        c.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "0123456789ab".into(),
            config: Some(container_config("x", &image, &["true"])),
            sandbox_config: None,
        })
        .await
        .expect_err("an unknown sandbox");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let no_image =
        c.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config("y", "example.com/none:1", &["true"])),
            sandbox_config: None,
        })
        .await
        .expect_err("a missing image");
    assert_eq!(no_image.code(), Code::NotFound, "{no_image:?}");
    let unknown =
        c.rt.start_container(cri::StartContainerRequest {
            container_id: "feedfacefeedface".into(),
        })
        .await
        .expect_err("an unknown container");
    assert_eq!(unknown.code(), Code::NotFound);

    // berthd killed with -9 and started again: the pod and its containers are as they were.
    d.kill9();
    d.restart();
    let mut c = clients(&d).await;
    let st = sandbox_state(&mut c, &sandbox).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(st.network.expect("network").ip, ip);
    assert_eq!(
        container_state(&mut c, &web_id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let r = exec(
        &mut c,
        &client_id,
        &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.txt"],
        10,
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&r.stdout), "served-in-pod\n");

    // Stop one container, then the pod; remove it all. The restarted berthd watches the
    // containers that kept running: the stop is an event.
    let mut events =
        c.rt.get_container_events(cri::GetEventsRequest::default())
            .await
            .expect("GetContainerEvents")
            .into_inner();
    c.rt.stop_container(cri::StopContainerRequest {
        container_id: web_id.clone(),
        timeout: 2,
    })
    .await
    .expect("StopContainer");
    let web_st = container_state(&mut c, &web_id).await;
    assert_eq!(web_st.state, cri::ContainerState::ContainerExited as i32);
    assert!(web_st.finished_at > 0);
    let stopped = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .unwrap_or_else(|_| panic!("no stop event:\n{}", d.log_text()))
        .expect("event stream")
        .expect("an event");
    assert_eq!(
        (stopped.container_id.as_str(), stopped.container_event_type),
        (
            web_id.as_str(),
            cri::ContainerEventType::ContainerStoppedEvent as i32
        )
    );
    let running =
        c.rt.list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    let mut running: Vec<String> = running.iter().map(|c| c.id.clone()).collect();
    running.sort();
    let mut want = vec![client_id.clone(), guarded_id.clone()];
    want.sort();
    assert_eq!(running, want);
    c.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .expect("StopPodSandbox");
    assert_eq!(
        sandbox_state(&mut c, &sandbox).await.state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    assert!(!d.state.join("cri/netns").join(&sandbox).exists());
    // The host port's rules went with the pod's network.
    let rules = std::process::Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(
        !rules.contains(&format!("cri-{}", net.bridge)),
        "{rules}\n{}",
        d.log_text()
    );
    c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .expect("RemovePodSandbox");
    let left =
        c.rt.list_containers(cri::ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
    assert!(left.is_empty(), "{left:?}");
    let pods =
        c.rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
    assert!(pods.is_empty(), "{pods:?}");
    let ctr_list = d.ctr(&["-n", "k8s.io", "containers", "ls", "-q"]);
    assert_eq!(String::from_utf8_lossy(&ctr_list.stdout), "");
    // Removing again is no error (as containerd).
    c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .expect("RemovePodSandbox again");
    c.img
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage");
    let gone = c
        .img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    assert!(gone.image.is_none());
}

/// The same CRI requests to berthd and to containerd 1.6's own CRI plugin (Debian's
/// containerd, its own root, socket and CNI network): the same states, status fields,
/// exec results and error codes. What differs on purpose is named where it is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_answers_as_containerd() {
    let work = tempfile::Builder::new()
        .prefix("berth-cri-sbs-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let w = work.path().to_path_buf();
    let (_reg, image, bb) = berth_tests::cri_registry(&w);
    let host = image.split('/').next().expect("host").to_string();
    let (berth_net, ctd_net) = (TestNetwork::claim(), TestNetwork::claim());
    std::fs::create_dir_all(w.join("b")).expect("mkdir");
    std::fs::create_dir_all(w.join("c")).expect("mkdir");
    let berth_cni = berth_net.cni_conf_dir(&w.join("b"));
    let ctd_cni = ctd_net.cni_conf_dir(&w.join("c"));
    let d = Daemon::start_with_config(&format!(
        "[cri]\ncni_conf_dir = \"{}\"\n",
        berth_cni.display()
    ));
    let ctd = berth_tests::Containerd::start_cri(&host, &ctd_cni);
    let mut sides = [
        ("berth", clients(&d).await),
        ("containerd", {
            let ch = channel(&ctd.address).await;
            Clients {
                rt: RuntimeServiceClient::new(ch.clone()),
                img: ImageServiceClient::new(ch),
            }
        }),
    ];
    let image_spec = |i: &str| {
        Some(cri::ImageSpec {
            image: i.to_string(),
            ..Default::default()
        })
    };

    // Version and Status.
    for (name, c) in sides.iter_mut() {
        let v =
            c.rt.version(cri::VersionRequest::default())
                .await
                .expect("Version")
                .into_inner();
        assert_eq!(v.runtime_api_version, "v1", "{name}");
        let st =
            c.rt.status(cri::StatusRequest::default())
                .await
                .expect("Status")
                .into_inner();
        let conditions: Vec<(String, bool)> = st
            .status
            .expect("status")
            .conditions
            .into_iter()
            .map(|c| (c.r#type, c.status))
            .collect();
        assert_eq!(
            conditions,
            vec![
                ("RuntimeReady".to_string(), true),
                ("NetworkReady".to_string(), true)
            ],
            "{name}"
        );
    }

    // Images: a missing one is no image (not an error); a pull gives the config digest.
    let mut ids = Vec::new();
    for (name, c) in sides.iter_mut() {
        let none = c
            .img
            .image_status(cri::ImageStatusRequest {
                image: image_spec(&format!("{host}/lib/none:1")),
                verbose: false,
            })
            .await
            .expect("ImageStatus")
            .into_inner();
        assert!(none.image.is_none(), "{name}");
        let id = c
            .img
            .pull_image(cri::PullImageRequest {
                image: image_spec(&image),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{name} PullImage: {e}"))
            .into_inner()
            .image_ref;
        let st = c
            .img
            .image_status(cri::ImageStatusRequest {
                image: image_spec(&image),
                verbose: false,
            })
            .await
            .expect("ImageStatus")
            .into_inner()
            .image
            .expect("image");
        ids.push((id, st.repo_tags, st.size > 0));
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0].0, bb.config.digest);

    // A pod on each, the same config.
    let config = pod_config(&w, "same", 0);
    let mut states = Vec::new();
    let mut pods = Vec::new();
    for (name, c) in sides.iter_mut() {
        let id =
            c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{name} RunPodSandbox: {e}"))
            .into_inner()
            .pod_sandbox_id;
        assert_eq!(id.len(), 64, "{name}");
        // A second pod of the same name: refused, naming the holder. (containerd answers
        // with code Unknown; berthd with AlreadyExists, the code of what happened.)
        let again =
            c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect_err("a second pod of the same name");
        assert!(
            again.message().contains("is reserved for"),
            "{name}: {again:?}"
        );
        let st = sandbox_state(c, &id).await;
        states.push((
            st.state,
            st.metadata.clone(),
            st.labels.clone(),
            st.annotations.get("note").cloned(),
            st.linux.clone(),
        ));
        pods.push(id);
    }
    assert_eq!(states[0], states[1]);
    // The same container in each pod: its states, exec results and exit.
    let mut seen = Vec::new();
    for (i, (name, c)) in sides.iter_mut().enumerate() {
        let cid =
            c.rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pods[i].clone(),
                config: Some(container_config("app", &image, &["sleep", "1000"])),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("{name} CreateContainer: {e}"))
            .into_inner()
            .container_id;
        let created = container_state(c, &cid).await;
        c.rt.start_container(cri::StartContainerRequest {
            container_id: cid.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{name} StartContainer: {e}"));
        let running = container_state(c, &cid).await;
        let hello = exec(c, &cid, &["sh", "-c", "echo hi; echo oops >&2; exit 3"], 10).await;
        let hostname = exec(c, &cid, &["hostname"], 10).await;
        c.rt.stop_container(cri::StopContainerRequest {
            container_id: cid.clone(),
            timeout: 1,
        })
        .await
        .unwrap_or_else(|e| panic!("{name} StopContainer: {e}"));
        let exited = container_state(c, &cid).await;
        seen.push((
            (
                created.state,
                created.metadata,
                created.labels,
                running.state,
                running.image.map(|i| i.image),
                running.image_ref,
            ),
            (
                hello.stdout,
                hello.stderr,
                hello.exit_code,
                hostname.stdout,
                exited.state,
                exited.exit_code,
                exited.reason,
            ),
        ));
        // Unknown ids: NotFound for status, nothing for removal.
        let unknown =
            c.rt.container_status(cri::ContainerStatusRequest {
                container_id: "0000000000000000".into(),
                verbose: false,
            })
            .await
            .expect_err("unknown container");
        assert_eq!(unknown.code(), Code::NotFound, "{name}: {unknown:?}");
        let unknown_pod =
            c.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: "0000000000000000".into(),
                verbose: false,
            })
            .await
            .expect_err("unknown pod");
        assert_eq!(
            unknown_pod.code(),
            Code::NotFound,
            "{name}: {unknown_pod:?}"
        );
        c.rt.remove_container(cri::RemoveContainerRequest {
            container_id: cid.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{name} RemoveContainer: {e}"));
        c.rt.remove_container(cri::RemoveContainerRequest {
            container_id: cid.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{name} RemoveContainer again: {e}"));
    }
    assert_eq!(seen[0], seen[1]);
    // Stopped, then removed; removing again is no error.
    for (i, (name, c)) in sides.iter_mut().enumerate() {
        c.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pods[i].clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{name} StopPodSandbox: {e}"));
        assert_eq!(
            sandbox_state(c, &pods[i]).await.state,
            cri::PodSandboxState::SandboxNotready as i32,
            "{name}"
        );
        for _ in 0..2 {
            c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pods[i].clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{name} RemovePodSandbox: {e}"));
        }
        let left =
            c.rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await
                .expect("ListPodSandbox")
                .into_inner()
                .items;
        assert!(left.is_empty(), "{name}: {left:?}");
    }
}

/// What goes wrong is refused with a clear error and leaves nothing: a CNI plugin that
/// fails, invalid security options; a pod whose shim died is NOTREADY, its containers
/// EXITED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_leave_nothing_behind() {
    let work = tempfile::Builder::new()
        .prefix("berth-cri-bad-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let w = work.path().to_path_buf();
    let net = TestNetwork::claim();
    let cni = net.cni_conf_dir(&w);
    let good = std::fs::read_to_string(cni.join("10-test.conflist")).expect("read");
    // First a configuration whose plugin does not exist.
    std::fs::write(
        cni.join("10-test.conflist"),
        good.replace("\"type\":\"bridge\"", "\"type\":\"no-such-plugin\""),
    )
    .expect("write");
    let bb = busybox_image(&w.join("bb"), "1.35");
    let reg = Registry::start();
    reg.push_layout(&bb.layout, "lib/busybox:1.35");
    let image = reg.reference("lib/busybox:1.35");
    let d = Daemon::start_with_config(&format!(
        "[cri]\ncni_conf_dir = \"{}\"\nmax_container_log_line_size = 8\n",
        cni.display()
    ));
    let mut c = clients(&d).await;
    let config = pod_config(&w, "broken", 0);
    let failed =
        c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a CNI plugin that is not there");
    assert!(
        failed
            .message()
            .contains("failed to setup network for sandbox"),
        "{failed:?}"
    );
    let pods =
        c.rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
    assert!(pods.is_empty(), "{pods:?}");
    let netns: Vec<_> = std::fs::read_dir(d.state.join("cri/netns"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "{netns:?}");
    let ctr_list = d.ctr(&["-n", "k8s.io", "containers", "ls", "-q"]);
    assert_eq!(String::from_utf8_lossy(&ctr_list.stdout), "");
    // A runtime handler that is not configured.
    let handler =
        c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "kata".into(),
        })
        .await
        .expect_err("an unknown handler");
    assert_eq!(handler.code(), Code::NotFound, "{handler:?}");
    // With a working network, the name was not kept reserved by the failure; two
    // creations of one name at once: one pod, one refusal.
    std::fs::write(cni.join("10-test.conflist"), &good).expect("write");
    let twin = pod_config(&w, "twin", 0);
    let (mut c1, mut c2) = (clients(&d).await, clients(&d).await);
    let run = |c: &mut Clients| {
        let mut rt = c.rt.clone();
        let twin = twin.clone();
        async move {
            rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(twin),
                runtime_handler: String::new(),
            })
            .await
        }
    };
    let (a, b) = tokio::join!(run(&mut c1), run(&mut c2));
    let (won, lost): (Vec<_>, Vec<_>) = [a, b].into_iter().partition(|r| r.is_ok());
    assert_eq!((won.len(), lost.len()), (1, 1), "{won:?} {lost:?}");
    let lost = lost.into_iter().next().expect("lost").expect_err("lost");
    assert!(lost.message().contains("is reserved for"), "{lost:?}");
    let winner = won
        .into_iter()
        .next()
        .expect("won")
        .expect("won")
        .into_inner()
        .pod_sandbox_id;
    c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: winner,
    })
    .await
    .expect("RemovePodSandbox twin");
    std::fs::write(cni.join("10-test.conflist"), &good).expect("write");
    let sandbox =
        c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    c.img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("PullImage");
    // Invalid security options: a privileged container in a pod that is not, an unknown
    // capability, a missing host path.
    let mut privileged = container_config("privileged", &image, &["true"]);
    privileged.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        resources: None,
    });
    let mut bad_cap = container_config("badcap", &image, &["true"]);
    bad_cap.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: vec!["CAP_MAKE_COFFEE".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: None,
    });
    let mut bad_mount = container_config("badmount", &image, &["true"]);
    bad_mount.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: "/nonexistent/berth/path".into(),
        ..Default::default()
    });
    for cfg in [privileged, bad_cap, bad_mount] {
        let name = cfg.metadata.clone().expect("metadata").name;
        let e =
            c.rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(cfg),
                sandbox_config: Some(config.clone()),
            })
            .await
            .expect_err("invalid options");
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
    }
    let left =
        c.rt.list_containers(cri::ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
    assert!(left.is_empty(), "{left:?}");
    let snapshots = d.ctr(&["-n", "k8s.io", "snapshots", "ls"]);
    let active = String::from_utf8_lossy(&snapshots.stdout)
        .lines()
        .filter(|l| l.contains("Active"))
        .count();
    assert_eq!(active, 0, "{}", String::from_utf8_lossy(&snapshots.stdout));
    assert_no_creation_lease(&d);
    // A running container, then the pod's shim killed: the pod is NOTREADY, the
    // container EXITED.
    let id = run_container(
        &mut c,
        &sandbox,
        &config,
        container_config(
            "sleeper",
            &image,
            &["sh", "-c", "echo 0123456789abcdef; exec sleep 1000"],
        ),
    )
    .await;
    // The lease that held its snapshot while it was made is gone once its record holds it.
    assert_no_creation_lease(&d);
    // A line longer than max_container_log_line_size: partial records of that size.
    let log = w.join("logs/sleeper/0.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(" F ")
    {
        assert!(std::time::Instant::now() < deadline, "no log line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| {
            l.split_once(' ')
                .map(|x| x.1)
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        records,
        vec!["stdout P 01234567", "stdout F 89abcdef"],
        "{records:?}"
    );
    let shim = berth_tests::shim_processes()
        .into_iter()
        .find(|(_, args)| {
            args.iter()
                .any(|a| a.contains(&d.address.display().to_string()))
        })
        .expect("the pod's shim");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim.0),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pod = sandbox_state(&mut c, &sandbox).await.state;
        let ct = container_state(&mut c, &id).await;
        if pod == cri::PodSandboxState::SandboxNotready as i32
            && ct.state == cri::ContainerState::ContainerExited as i32
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod {pod}, container {ct:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .expect("RemovePodSandbox");
    let ctr_list = d.ctr(&["-n", "k8s.io", "containers", "ls", "-q"]);
    assert_eq!(String::from_utf8_lossy(&ctr_list.stdout), "");
    assert!(!d.state.join("cri/netns").join(&sandbox).exists());
}

/// No lease of CreateContainer's (which holds a new container's snapshot until its
/// record does) is left, whether the creation succeeded or failed.
fn assert_no_creation_lease(d: &Daemon) {
    let leases = berth_tests::ok(&d.ctr(&["-n", "k8s.io", "leases", "ls", "-q"]), "leases ls");
    assert!(
        !leases.lines().any(|l| l.starts_with("berth-cri-")),
        "{leases}"
    );
}

/// A configured `cri.sandbox_image` is pulled and run as the pods' init process instead
/// of berth's own pause; its snapshot goes with the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_sandbox_image_is_honoured() {
    let work = tempfile::Builder::new()
        .prefix("berth-cri-img-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let w = work.path().to_path_buf();
    let net = TestNetwork::claim();
    let cni = net.cni_conf_dir(&w);
    let reg = Registry::start();
    let pause = berth_tests::fixtures::busybox_image_with(
        &w.join("pause"),
        "3.9",
        serde_json::json!({"Entrypoint": ["/bin/sleep"], "Cmd": ["100000000"]}),
    );
    reg.push_layout(&pause.layout, "pause:3.9");
    let pause_ref = reg.reference("pause:3.9");
    let d = Daemon::start_with_config(&format!(
        "[cri]\ncni_conf_dir = \"{}\"\nsandbox_image = \"{pause_ref}\"\n",
        cni.display()
    ));
    let mut c = clients(&d).await;
    let sandbox =
        c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(&w, "imaged", 0)),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let status =
        c.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    assert_eq!(
        status.status.expect("status").state,
        cri::PodSandboxState::SandboxReady as i32
    );
    assert!(
        status.info["info"].contains("pause:3.9"),
        "{:?}",
        status.info
    );
    let images = c
        .img
        .list_images(cri::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(
        images.iter().any(|i| i.repo_tags.contains(&pause_ref)),
        "{images:?}"
    );
    let active = |d: &Daemon| {
        let out = d.ctr(&["-n", "k8s.io", "snapshots", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("Active"))
            .count()
    };
    assert_eq!(active(&d), 1);
    c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .expect("RemovePodSandbox");
    assert_eq!(active(&d), 0);
}

/// A minimal WebSocket client of Kubernetes' channel protocol, for the streaming server:
/// the upgrade, masked binary messages out, messages in until the server closes.
struct Ws {
    conn: std::net::TcpStream,
}

impl Ws {
    /// Connects to `url` (`http://host:port/path`), offering `protocol`; the answer's
    /// status line when it is not a 101.
    fn connect(url: &str, protocol: &str) -> Result<Ws, String> {
        use std::io::{BufRead, BufReader, Write};
        let rest = url.strip_prefix("http://").expect("http URL");
        let (host, path) = rest.split_once('/').expect("path");
        let mut conn = std::net::TcpStream::connect(host).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        write!(
            conn,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        )
        .expect("request");
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        let mut status = String::new();
        reader.read_line(&mut status).expect("status");
        let mut accept = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if line
                .to_ascii_lowercase()
                .starts_with("sec-websocket-accept:")
            {
                accept = line[21..].trim().to_string();
            }
        }
        if !status.contains(" 101 ") {
            return Err(status);
        }
        // RFC 6455's example key and its answer.
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        Ok(Ws { conn })
    }

    fn send(&mut self, channel: u8, data: &[u8]) {
        use std::io::Write;
        let mut payload = vec![channel];
        payload.extend_from_slice(data);
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut f = vec![0x82u8];
        if payload.len() < 126 {
            f.push(0x80 | payload.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend((payload.len() as u16).to_be_bytes());
        }
        f.extend(mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.conn.write_all(&f).expect("send");
    }

    /// The next message (channel, data); None at the close frame.
    fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut h = [0u8; 2];
        self.conn.read_exact(&mut h).ok()?;
        let mut len = usize::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            self.conn.read_exact(&mut b).ok()?;
            len = usize::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.conn.read_exact(&mut b).ok()?;
            len = u64::from_be_bytes(b) as usize;
        }
        let mut payload = vec![0u8; len];
        self.conn.read_exact(&mut payload).ok()?;
        if h[0] & 0x0f == 8 {
            return None;
        }
        let (ch, data) = payload.split_first()?;
        Some((*ch, data.to_vec()))
    }

    /// Every message until the close, by channel.
    fn drain(&mut self) -> BTreeMap<u8, Vec<u8>> {
        let mut out: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        while let Some((ch, data)) = self.recv() {
            out.entry(ch).or_default().extend(data);
        }
        out
    }
}

/// Exec and PortForward through the streaming server, with a WebSocket client.
async fn streaming_checks(c: &mut Clients, client_id: &str, sandbox: &str) {
    // An exec with stdin, stdout and stderr: the input, the outputs, the exit status.
    let url =
        c.rt.exec(cri::ExecRequest {
            container_id: client_id.into(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "read line; echo got:$line; echo err >&2; exit 4".into(),
            ],
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut ws = Ws::connect(&u, "v5.channel.k8s.io").expect("upgrade");
        ws.send(0, b"hello\n");
        ws.send(255, &[0]);
        ws.drain()
    })
    .await
    .expect("exec stream");
    assert_eq!(String::from_utf8_lossy(&out[&1]), "got:hello\n");
    assert_eq!(String::from_utf8_lossy(&out[&2]), "err\n");
    let status = String::from_utf8_lossy(&out[&3]).into_owned();
    assert!(
        status.contains("NonZeroExitCode") && status.contains("\"message\":\"4\""),
        "{status}"
    );
    // A URL serves once.
    let u = url.clone();
    let again = tokio::task::spawn_blocking(move || Ws::connect(&u, "v5.channel.k8s.io").err())
        .await
        .expect("again");
    assert!(again.expect("refused").contains("404"));
    // A terminal, resized.
    let url =
        c.rt.exec(cri::ExecRequest {
            container_id: client_id.into(),
            cmd: vec!["sh".into(), "-c".into(), "sleep 1; stty size".into()],
            tty: true,
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("Exec tty")
        .into_inner()
        .url;
    let out = tokio::task::spawn_blocking(move || {
        let mut ws = Ws::connect(&url, "v4.channel.k8s.io").expect("upgrade");
        ws.send(4, br#"{"Width":100,"Height":40}"#);
        ws.drain()
    })
    .await
    .expect("tty stream");
    assert_eq!(String::from_utf8_lossy(&out[&1]).trim(), "40 100");
    assert!(String::from_utf8_lossy(&out[&3]).contains("Success"));
    // Port forwarding to the web server on the pod's localhost.
    let url =
        c.rt.port_forward(cri::PortForwardRequest {
            pod_sandbox_id: sandbox.into(),
            port: vec![8080],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let page = tokio::task::spawn_blocking(move || {
        let mut ws =
            Ws::connect(&format!("{url}?port=8080"), "v4.channel.k8s.io").expect("upgrade");
        // Each channel opens with the port.
        let opened = [ws.recv(), ws.recv()];
        assert_eq!(
            opened,
            [
                Some((0, 8080u16.to_le_bytes().to_vec())),
                Some((1, 8080u16.to_le_bytes().to_vec()))
            ]
        );
        ws.send(0, b"GET /index.txt HTTP/1.0\r\n\r\n");
        let mut page = Vec::new();
        while let Some((ch, data)) = ws.recv() {
            if ch == 0 {
                page.extend(data);
            }
            if String::from_utf8_lossy(&page).contains("served-in-pod") {
                break;
            }
        }
        String::from_utf8_lossy(&page).into_owned()
    })
    .await
    .expect("port-forward stream");
    assert!(page.ends_with("served-in-pod\n"), "{page}");
    spdy_checks(c, client_id, sandbox).await;
}

/// Runs the SPDY client (`tests/spdyclient`, on moby/spdystream as client-go) and
/// returns what it printed.
async fn spdy(args: Vec<String>) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(go_build("spdyclient"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run spdyclient")
    })
    .await
    .expect("spdyclient");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spdyclient failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The streams over SPDY/3.1, as client-go (kubectl through the kubelet, crictl before
/// 1.30) opens them: exec with all three streams and its exit status in each protocol
/// version's form, a resized terminal, port forwarding with a reachable and an
/// unreachable port, and the refusals.
async fn spdy_checks(c: &mut Clients, client_id: &str, sandbox: &str) {
    let rt = c.rt.clone();
    let exec_url = |cmd: &str, stdin: bool, tty: bool| {
        let mut rt = rt.clone();
        let request = cri::ExecRequest {
            container_id: client_id.into(),
            cmd: vec!["sh".into(), "-c".into(), cmd.into()],
            stdin,
            stdout: true,
            stderr: !tty,
            tty,
        };
        async move { rt.exec(request).await.expect("Exec").into_inner().url }
    };
    let script = "read line; echo got:$line; echo err >&2; exit 4";
    let url = exec_url(script, true, false).await;
    let v = spdy(
        [
            "exec", "-url", &url, "-stdin", "hello\n", "-stdout", "-stderr",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(v["protocol"], "v4.channel.k8s.io", "{v}");
    assert_eq!(v["stdout"], "got:hello\n", "{v}");
    assert_eq!(v["stderr"], "err\n", "{v}");
    let status: serde_json::Value =
        serde_json::from_str(v["error"].as_str().unwrap_or_default()).expect("a Status");
    assert_eq!(status["reason"], "NonZeroExitCode", "{v}");
    assert_eq!(status["details"]["causes"][0]["message"], "4", "{v}");
    // v2 (and v3) write only a failure's message, and nothing for a success.
    for (cmd, error) in [
        (
            script,
            "command terminated with non-zero exit code: error executing command [sh -c read line; echo got:$line; echo err >&2; exit 4], exit code 4",
        ),
        ("read line; echo $line", ""),
    ] {
        let url = exec_url(cmd, true, false).await;
        let v = spdy(
            [
                "exec",
                "-url",
                &url,
                "-protocols",
                "v2.channel.k8s.io",
                "-stdin",
                "x\n",
                "-stdout",
                "-stderr",
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert_eq!(v["protocol"], "v2.channel.k8s.io", "{v}");
        assert_eq!(v["error"], error, "{v}");
    }
    // A terminal, resized through the resize stream.
    let url = exec_url("sleep 1; stty size", false, true).await;
    let v = spdy(
        ["exec", "-url", &url, "-stdout", "-tty", "-resize", "120x33"]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert_eq!(
        v["stdout"].as_str().unwrap_or_default().trim(),
        "33 120",
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap_or_default().contains("Success"),
        "{v}"
    );
    // Port forwarding: one connection to the pod's web server, one to a closed port.
    let url =
        c.rt.port_forward(cri::PortForwardRequest {
            pod_sandbox_id: sandbox.into(),
            port: vec![8080],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let v = spdy(
        [
            "portforward",
            "-url",
            &url,
            "-ports",
            "8080,9",
            "-send",
            "GET /index.txt HTTP/1.0\r\n\r\n",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(v["protocol"], "portforward.k8s.io", "{v}");
    let web = &v["ports"][0];
    assert!(
        web["data"]
            .as_str()
            .unwrap_or_default()
            .ends_with("served-in-pod\n"),
        "{v}"
    );
    assert_eq!(web["error"], "", "{v}");
    let closed = &v["ports"][1];
    assert_eq!(closed["data"], "", "{v}");
    assert!(
        closed["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("failed to connect to localhost:9 in pod "),
        "{v}"
    );
    // A protocol the server does not speak: 403, as the kubelet answers.
    let url = exec_url("true", false, false).await;
    let v = spdy(
        [
            "exec",
            "-url",
            &url,
            "-protocols",
            "v9.channel.k8s.io",
            "-stdout",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(v["status"], 403, "{v}");
    assert!(
        v["body"]
            .as_str()
            .unwrap_or_default()
            .contains("unable to negotiate protocol"),
        "{v}"
    );
    // No upgrade at all: a clear 400.
    let url = exec_url("true", false, false).await;
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").expect("http");
        let (host, path) = rest.split_once('/').expect("path");
        let mut conn = std::net::TcpStream::connect(host).expect("connect");
        write!(conn, "POST /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("request");
        let mut text = String::new();
        let _ = conn.read_to_string(&mut text);
        text
    })
    .await
    .expect("plain request");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("SPDY/3.1"),
        "{answer}"
    );
}
