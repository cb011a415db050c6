//! The one list of what berthd serves on its gRPC socket. Each entry adds the service to
//! the router, names it for Health and gives its Introspection plugin entry, so the three
//! cannot drift apart. A new front door (CRI, berth's own API) is one more entry here.

use berth_proto::berth::services::networks::v1::networks_server::NetworksServer;
use berth_proto::berth::services::registry::v1::registry_server::RegistryServer;
use berth_proto::berth::services::supervisor::v1::supervisor_server::SupervisorServer;
use berth_proto::berth::services::volumes::v1::volumes_server::VolumesServer;
use berth_proto::containerd::services::containers::v1::containers_server::ContainersServer;
use berth_proto::containerd::services::content::v1::content_server::ContentServer;
use berth_proto::containerd::services::diff::v1::diff_server::DiffServer;
use berth_proto::containerd::services::events::v1::events_server::EventsServer;
use berth_proto::containerd::services::images::v1::images_server::ImagesServer;
use berth_proto::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
use berth_proto::containerd::services::leases::v1::leases_server::LeasesServer;
use berth_proto::containerd::services::namespaces::v1::namespaces_server::NamespacesServer;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_proto::containerd::services::streaming::v1::streaming_server::StreamingServer;
use berth_proto::containerd::services::tasks::v1::tasks_server::TasksServer;
use berth_proto::containerd::services::transfer::v1::transfer_server::TransferServer;
use berth_proto::containerd::services::version::v1::version_server::VersionServer;
use berth_proto::runtime::v1::image_service_server::ImageServiceServer;
use berth_proto::runtime::v1::runtime_service_server::RuntimeServiceServer;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

use super::{self as api, Services};
use crate::plugins::{BERTH_SERVICE, CONTENT, EVENT, GRPC, LEASE, METADATA, PluginInfo, SERVICE};

/// gRPC messages up to this size are accepted (containerd's default).
pub const MAX_MESSAGE: usize = 16 << 20;

/// The services whose calls wait until the tasks of the previous run are restored (see
/// [`crate::gate`]): what they answer depends on the tasks, or changes them.
pub const HELD_UNTIL_RESTORED: [&str; 6] = [
    <TasksServer<api::tasks::TasksApi> as NamedService>::NAME,
    <ContainersServer<api::containers::ContainersApi> as NamedService>::NAME,
    <RuntimeServiceServer<api::cri::CriApi> as NamedService>::NAME,
    <NetworksServer<api::networks::NetworksApi> as NamedService>::NAME,
    <VolumesServer<api::volumes::VolumesApi> as NamedService>::NAME,
    <SupervisorServer<api::supervisor::SupervisorApi> as NamedService>::NAME,
];

/// The gRPC services, as the router, their full names (for Health) and their plugins.
#[derive(Default)]
pub struct Catalog {
    pub routes: RoutesBuilder,
    pub names: Vec<&'static str>,
    pub plugins: Vec<PluginInfo>,
}

fn name_of<S: NamedService>(_: &S) -> &'static str {
    S::NAME
}

/// Adds one service: `$id` is its plugin id (type `io.containerd.grpc.v1`), `$requires`
/// the plugin types it needs.
macro_rules! serve {
    ($catalog:expr, $id:expr, [$($req:expr),*], $service:expr) => {{
        serve!($catalog, GRPC, $id, [$($req),*], $service)
    }};
    ($catalog:expr, $kind:expr, $id:expr, [$($req:expr),*], $service:expr) => {{
        let service = $service.max_decoding_message_size(MAX_MESSAGE);
        $catalog.names.push(name_of(&service));
        $catalog
            .plugins
            .push(PluginInfo::new($kind, $id).requires(&[$($req),*]));
        $catalog.routes.add_service(service);
    }};
}

/// Every containerd v1 service berthd serves, over `s`. The Snapshots and Diff services
/// are served only when a snapshotter loaded (containerd skips plugins whose dependencies
/// failed).
pub fn containerd_services(s: &Services) -> Catalog {
    let mut c = Catalog::default();
    serve!(
        c,
        "version",
        [],
        VersionServer::new(api::version::VersionApi)
    );
    serve!(
        c,
        "namespaces",
        [METADATA, EVENT],
        NamespacesServer::new(api::namespaces::NamespacesApi(s.clone()))
    );
    serve!(
        c,
        "introspection",
        [],
        IntrospectionServer::new(api::introspection::IntrospectionApi(s.clone()))
    );
    serve!(
        c,
        "containers",
        [METADATA, EVENT],
        ContainersServer::new(api::containers::ContainersApi(s.clone()))
    );
    serve!(
        c,
        "content",
        [METADATA, EVENT],
        ContentServer::new(api::content::ContentApi(s.clone()))
    );
    serve!(
        c,
        "images",
        [METADATA, EVENT],
        ImagesServer::new(api::images::ImagesApi(s.clone()))
    );
    serve!(
        c,
        "leases",
        [LEASE],
        LeasesServer::new(api::leases::LeasesApi(s.clone()))
    );
    if s.snapshotters.names().next().is_some() {
        serve!(
            c,
            "snapshots",
            [SERVICE],
            SnapshotsServer::new(api::snapshots::SnapshotsApi::daemon(s))
        );
        serve!(
            c,
            "diff",
            [SERVICE],
            DiffServer::new(api::diff::DiffApi::new(s))
        );
    }
    serve!(
        c,
        "streaming",
        [],
        StreamingServer::new(api::streaming::StreamingApi(s.clone()))
    );
    serve!(
        c,
        "transfer",
        [CONTENT, METADATA, LEASE],
        TransferServer::new(api::transfer::TransferApi(s.clone()))
    );
    serve!(
        c,
        "tasks",
        [SERVICE],
        TasksServer::new(api::tasks::TasksApi(s.tasks.clone()))
    );
    serve!(
        c,
        "events",
        [EVENT],
        EventsServer::new(api::events::EventsApi(s.exchange.clone()))
    );
    serve!(
        c,
        BERTH_SERVICE,
        "networks",
        [METADATA],
        NetworksServer::new(api::networks::NetworksApi(s.clone()))
    );
    serve!(
        c,
        BERTH_SERVICE,
        "supervisor",
        [METADATA, EVENT, SERVICE],
        SupervisorServer::new(api::supervisor::SupervisorApi(s.clone()))
    );
    serve!(
        c,
        BERTH_SERVICE,
        "registry",
        [CONTENT],
        RegistryServer::new(api::registry::RegistryApi(s.clone()))
    );
    serve!(
        c,
        BERTH_SERVICE,
        "volumes",
        [METADATA],
        VolumesServer::new(api::volumes::VolumesApi(s.clone()))
    );
    if let Some(cri) = &s.cri {
        serve!(
            c,
            "cri",
            [SERVICE],
            RuntimeServiceServer::new(api::cri::CriApi(cri.clone()))
        );
        c.names
            .push(name_of(&ImageServiceServer::new(api::cri::CriApi(
                cri.clone(),
            ))));
        c.routes.add_service(
            ImageServiceServer::new(api::cri::CriApi(cri.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
        );
    }
    c
}
