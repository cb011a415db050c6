//! `berth.services.networks.v1.Networks`: berth's own API for user-defined networks. The
//! network core owns every rule; this converts.

use berth_proto::berth::services::networks::v1 as pb;
use berth_proto::berth::services::networks::v1::networks_server::Networks;
use tonic::{Request, Response, Status};

use super::status::OrStatus;
use super::{Convert, Services, namespace_required, to_timestamp};
use crate::network::{Endpoint, NetworkRecord, NetworkSpec};

impl Convert<pb::Network> for NetworkRecord {
    fn convert(self) -> pb::Network {
        pb::Network {
            id: self.id,
            name: self.name,
            driver: self.driver,
            subnet: self.subnet,
            gateway: self.gateway,
            ip_range: self.ip_range,
            internal: self.internal,
            labels: self.labels,
            options: self.options,
            bridge: self.bridge,
            created_at: (self.created_at != 0).then(|| to_timestamp(self.created_at)),
            endpoints: Vec::new(),
        }
    }
}

impl Convert<pb::Endpoint> for Endpoint {
    fn convert(self) -> pb::Endpoint {
        pb::Endpoint {
            container_id: self.container_id,
            ifname: self.ifname,
            address: self.address,
            mac_address: self.mac,
            aliases: self.aliases,
            ports: self
                .ports
                .into_iter()
                .map(|p| pb::PortBinding {
                    host_ip: p.host_ip,
                    host_port: u32::from(p.host_port),
                    container_port: u32::from(p.container_port),
                    protocol: p.protocol,
                })
                .collect(),
        }
    }
}

impl Convert<NetworkSpec> for pb::CreateNetworkRequest {
    fn convert(self) -> NetworkSpec {
        NetworkSpec {
            name: self.name,
            driver: self.driver,
            subnet: self.subnet,
            gateway: self.gateway,
            ip_range: self.ip_range,
            internal: self.internal,
            labels: self.labels,
            options: self.options,
        }
    }
}

pub struct NetworksApi(pub Services);

#[tonic::async_trait]
impl Networks for NetworksApi {
    async fn create(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::CreateNetworkResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let rec = self
            .0
            .networks
            .create_network(&ns, req.into_inner().convert())
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateNetworkResponse {
            network: Some(rec.convert()),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::GetNetworkResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let networks = &self.0.networks;
        let rec = networks
            .network(&ns, &req.into_inner().name)
            .await
            .or_status()?;
        let endpoints = networks.endpoints(&ns, &rec).await.or_status()?;
        let mut network = rec.convert();
        network.endpoints = endpoints.into_iter().map(Convert::convert).collect();
        Ok(Response::new(pb::GetNetworkResponse {
            network: Some(network),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let list = self.0.networks.list_networks(&ns).await.or_status()?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: list.into_iter().map(Convert::convert).collect(),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteNetworkRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        self.0
            .networks
            .remove_network(&ns, &req.into_inner().name)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn prune(
        &self,
        req: Request<pb::PruneNetworksRequest>,
    ) -> Result<Response<pb::PruneNetworksResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let deleted = self
            .0
            .networks
            .prune_networks(&ns, &req.into_inner().filters)
            .await
            .or_status()?;
        Ok(Response::new(pb::PruneNetworksResponse { deleted }))
    }

    async fn connect_container(
        &self,
        req: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::ConnectResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let attached = self
            .0
            .networks
            .connect_to(
                &ns,
                &r.container_id,
                &r.network,
                &r.ip,
                &r.aliases,
                &r.container_name,
            )
            .await
            .or_status()?;
        Ok(Response::new(pb::ConnectResponse {
            attached: attached.is_some(),
            endpoint: attached.map(|n| Endpoint::of(&r.container_id, &n).convert()),
        }))
    }

    async fn disconnect_container(
        &self,
        req: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let detached = self
            .0
            .networks
            .disconnect_from(&ns, &r.container_id, &r.network)
            .await
            .or_status()?;
        Ok(Response::new(pb::DisconnectResponse { detached }))
    }
}
