//! Kubernetes' CRI (`runtime.v1.RuntimeService` and `runtime.v1.ImageService`) on berthd's
//! socket, over the core's CRI domain ([`crate::cri`]). The CRI's messages are that
//! domain's own types, so this adapter only unpacks requests, calls one core method and
//! maps errors through the one status mapping. What berthd does not do yet answers
//! Unimplemented, naming what is missing.

use std::pin::Pin;

use berth_proto::runtime::v1 as cri;
use berth_proto::runtime::v1::image_service_server::ImageService;
use berth_proto::runtime::v1::runtime_service_server::RuntimeService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::status::{OrStatus, status};
use crate::cri::{Cri, RUNTIME_API_VERSION, RUNTIME_NAME};
use crate::error::Error;

/// The CRI front door.
#[derive(Clone)]
pub struct CriApi(pub Cri);

type Rpc<T> = Result<Response<T>, Status>;
type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unimplemented<T>(what: &str) -> Rpc<T> {
    Err(status(Error::NotImplemented(format!(
        "{what} is not implemented by berthd yet"
    ))))
}

fn no_checkpoints<T>(what: &str) -> Rpc<T> {
    Err(status(Error::NotImplemented(format!(
        "{what}: berthd does not checkpoint (no CRIU)"
    ))))
}

/// One message as a stream (the Stream* calls answer with the whole list at once).
fn once<T: Send + 'static>(item: T) -> Streamed<T> {
    Box::pin(tokio_stream::iter([Ok(item)]))
}

fn image_ref(spec: Option<cri::ImageSpec>) -> String {
    spec.map(|s| s.image).unwrap_or_default()
}

#[tonic::async_trait]
impl RuntimeService for CriApi {
    async fn version(&self, _r: Request<cri::VersionRequest>) -> Rpc<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> Rpc<cri::RunPodSandboxResponse> {
        let r = r.into_inner();
        let config = r
            .config
            .ok_or_else(|| status(Error::invalid("sandbox config must not be empty")))?;
        let id = self
            .0
            .run_sandbox(config, &r.runtime_handler)
            .await
            .or_status()?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> Rpc<cri::StopPodSandboxResponse> {
        self.0
            .stop_sandbox(&r.into_inner().pod_sandbox_id)
            .await
            .or_status()?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> Rpc<cri::RemovePodSandboxResponse> {
        self.0
            .remove_sandbox(&r.into_inner().pod_sandbox_id)
            .await
            .or_status()?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> Rpc<cri::PodSandboxStatusResponse> {
        let r = r.into_inner();
        let (status, info) = self
            .0
            .sandbox_status(&r.pod_sandbox_id, r.verbose)
            .await
            .or_status()?;
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: Vec::new(),
            timestamp: 0,
        }))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> Rpc<cri::ListPodSandboxResponse> {
        let items = self
            .0
            .list_sandboxes(r.into_inner().filter)
            .await
            .or_status()?;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    type StreamPodSandboxesStream = Streamed<cri::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        r: Request<cri::StreamPodSandboxesRequest>,
    ) -> Rpc<Self::StreamPodSandboxesStream> {
        let pod_sandboxes = self
            .0
            .list_sandboxes(r.into_inner().filter)
            .await
            .or_status()?;
        Ok(Response::new(once(cri::StreamPodSandboxesResponse {
            pod_sandboxes,
        })))
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> Rpc<cri::CreateContainerResponse> {
        let r = r.into_inner();
        let config = r
            .config
            .ok_or_else(|| status(Error::invalid("container config must not be empty")))?;
        let id = self
            .0
            .create_container(&r.pod_sandbox_id, config)
            .await
            .or_status()?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> Rpc<cri::StartContainerResponse> {
        self.0
            .start_container(&r.into_inner().container_id)
            .await
            .or_status()?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> Rpc<cri::StopContainerResponse> {
        let r = r.into_inner();
        self.0
            .stop_container(&r.container_id, r.timeout)
            .await
            .or_status()?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> Rpc<cri::RemoveContainerResponse> {
        self.0
            .remove_container(&r.into_inner().container_id)
            .await
            .or_status()?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> Rpc<cri::ListContainersResponse> {
        let containers = self
            .0
            .list_containers(r.into_inner().filter)
            .await
            .or_status()?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    type StreamContainersStream = Streamed<cri::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        r: Request<cri::StreamContainersRequest>,
    ) -> Rpc<Self::StreamContainersStream> {
        let containers = self
            .0
            .list_containers(r.into_inner().filter)
            .await
            .or_status()?;
        Ok(Response::new(once(cri::StreamContainersResponse {
            containers,
        })))
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> Rpc<cri::ContainerStatusResponse> {
        let r = r.into_inner();
        let (status, info) = self
            .0
            .container_status(&r.container_id, r.verbose)
            .await
            .or_status()?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Rpc<cri::UpdateContainerResourcesResponse> {
        let r = r.into_inner();
        self.0
            .update_container_resources(&r.container_id, r.linux.unwrap_or_default())
            .await
            .or_status()?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> Rpc<cri::ReopenContainerLogResponse> {
        self.0
            .reopen_container_log(&r.into_inner().container_id)
            .await
            .or_status()?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> Rpc<cri::ExecSyncResponse> {
        let r = r.into_inner();
        let (stdout, stderr, exit_code) = self
            .0
            .exec_sync(&r.container_id, r.cmd, r.timeout)
            .await
            .or_status()?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        }))
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> Rpc<cri::ExecResponse> {
        let url = self.0.exec_url(r.into_inner()).await.or_status()?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> Rpc<cri::AttachResponse> {
        let url = self.0.attach_url(r.into_inner()).await.or_status()?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> Rpc<cri::PortForwardResponse> {
        let url = self.0.port_forward_url(r.into_inner()).await.or_status()?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> Rpc<cri::ContainerStatsResponse> {
        let stats = self
            .0
            .container_stats(&r.into_inner().container_id)
            .await
            .or_status()?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> Rpc<cri::ListContainerStatsResponse> {
        let stats = self
            .0
            .list_container_stats(r.into_inner().filter)
            .await
            .or_status()?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    type StreamContainerStatsStream = Streamed<cri::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        r: Request<cri::StreamContainerStatsRequest>,
    ) -> Rpc<Self::StreamContainerStatsStream> {
        let container_stats = self
            .0
            .list_container_stats(r.into_inner().filter)
            .await
            .or_status()?;
        Ok(Response::new(once(cri::StreamContainerStatsResponse {
            container_stats,
        })))
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> Rpc<cri::PodSandboxStatsResponse> {
        let stats = self
            .0
            .sandbox_stats(&r.into_inner().pod_sandbox_id)
            .await
            .or_status()?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Rpc<cri::ListPodSandboxStatsResponse> {
        let stats = self
            .0
            .list_sandbox_stats(r.into_inner().filter)
            .await
            .or_status()?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxStatsStream = Streamed<cri::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Rpc<Self::StreamPodSandboxStatsStream> {
        let pod_sandbox_stats = self
            .0
            .list_sandbox_stats(r.into_inner().filter)
            .await
            .or_status()?;
        Ok(Response::new(once(cri::StreamPodSandboxStatsResponse {
            pod_sandbox_stats,
        })))
    }

    async fn update_runtime_config(
        &self,
        _r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Rpc<cri::UpdateRuntimeConfigResponse> {
        // The pod CIDR is the CNI configuration's business here (as with containerd when
        // its config has no template): accepted, nothing to change.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> Rpc<cri::StatusResponse> {
        let verbose = r.into_inner().verbose;
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: self.0.conditions().await,
            }),
            info: if verbose {
                self.0.info()
            } else {
                Default::default()
            },
            runtime_handlers: Vec::new(),
            features: None,
        }))
    }

    async fn checkpoint_container(
        &self,
        _r: Request<cri::CheckpointContainerRequest>,
    ) -> Rpc<cri::CheckpointContainerResponse> {
        no_checkpoints("CheckpointContainer")
    }

    async fn checkpoint_pod(
        &self,
        _r: Request<cri::CheckpointPodRequest>,
    ) -> Rpc<cri::CheckpointPodResponse> {
        no_checkpoints("CheckpointPod")
    }

    async fn restore_pod(
        &self,
        _r: Request<cri::RestorePodRequest>,
    ) -> Rpc<cri::RestorePodResponse> {
        no_checkpoints("RestorePod")
    }

    type GetContainerEventsStream = Streamed<cri::ContainerEventResponse>;

    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        use tokio_stream::StreamExt as _;
        // A subscriber too slow to keep up misses events (as containerd's bounded
        // channel); the stream goes on.
        let events = tokio_stream::wrappers::BroadcastStream::new(self.0.events())
            .filter_map(|e| e.ok().map(Ok));
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Rpc<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: self.0.metric_descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Rpc<cri::ListPodSandboxMetricsResponse> {
        let pod_metrics = self.0.pod_metrics().await.or_status()?;
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    type StreamPodSandboxMetricsStream = Streamed<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _r: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Rpc<Self::StreamPodSandboxMetricsStream> {
        let pod_sandbox_metrics = self.0.pod_metrics().await.or_status()?;
        Ok(Response::new(once(cri::StreamPodSandboxMetricsResponse {
            pod_sandbox_metrics,
        })))
    }

    async fn runtime_config(
        &self,
        _r: Request<cri::RuntimeConfigRequest>,
    ) -> Rpc<cri::RuntimeConfigResponse> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        _r: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Rpc<cri::UpdatePodSandboxResourcesResponse> {
        unimplemented("UpdatePodSandboxResources")
    }
}

#[tonic::async_trait]
impl ImageService for CriApi {
    async fn list_images(
        &self,
        r: Request<cri::ListImagesRequest>,
    ) -> Rpc<cri::ListImagesResponse> {
        let filter = image_ref(r.into_inner().filter.and_then(|f| f.image));
        let images = self.0.list_images(&filter).await.or_status()?;
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    type StreamImagesStream = Streamed<cri::StreamImagesResponse>;

    async fn stream_images(
        &self,
        r: Request<cri::StreamImagesRequest>,
    ) -> Rpc<Self::StreamImagesStream> {
        let filter = image_ref(r.into_inner().filter.and_then(|f| f.image));
        let images = self.0.list_images(&filter).await.or_status()?;
        Ok(Response::new(once(cri::StreamImagesResponse { images })))
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> Rpc<cri::ImageStatusResponse> {
        let r = r.into_inner();
        let (image, info) = self
            .0
            .image_status(&image_ref(r.image), r.verbose)
            .await
            .or_status()?;
        Ok(Response::new(cri::ImageStatusResponse { image, info }))
    }

    async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> Rpc<cri::PullImageResponse> {
        let r = r.into_inner();
        let image_ref = self
            .0
            .pull_image(&image_ref(r.image), r.auth)
            .await
            .or_status()?;
        Ok(Response::new(cri::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> Rpc<cri::RemoveImageResponse> {
        self.0
            .remove_image(&image_ref(r.into_inner().image))
            .await
            .or_status()?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _r: Request<cri::ImageFsInfoRequest>,
    ) -> Rpc<cri::ImageFsInfoResponse> {
        let fs = self.0.image_fs().await.or_status()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let usage = cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: fs.mountpoint.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value {
                value: fs.used_bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: fs.inodes_used,
            }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        }))
    }
}
