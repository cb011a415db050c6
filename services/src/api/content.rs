//! `containerd.services.content.v1.Content`.

use crate::api::status::{IntoStatus, OrStatus};
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;

use berth_proto::containerd::services::content::v1 as pb;
use berth_proto::containerd::services::content::v1::WriteAction as WireAction;
use berth_proto::containerd::services::content::v1::content_server::Content;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Convert;
use super::{Services, lease, namespace_required, to_timestamp};
use crate::content::{Info, Status as IngestStatus, WriteAction, WriteRequest, WriteSession};
use crate::error::Error;
use crate::filters::Filter;

/// Bytes per `Read` response message.
const READ_CHUNK: usize = 1 << 20;

impl Convert<pb::Info> for Info {
    fn convert(self) -> pb::Info {
        let i = self;
        pb::Info {
            digest: i.digest,
            size: i.size,
            created_at: Some(to_timestamp(i.created_at)),
            updated_at: Some(to_timestamp(i.updated_at)),
            labels: i.labels,
        }
    }
}

impl Convert<pb::Status> for IngestStatus {
    fn convert(self) -> pb::Status {
        let s = self;
        pb::Status {
            started_at: Some(to_timestamp(s.started_at)),
            updated_at: Some(to_timestamp(s.updated_at)),
            r#ref: s.reference,
            offset: s.offset,
            total: s.total,
            expected: s.expected,
        }
    }
}

pub struct ContentApi(pub Services);

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Content for ContentApi {
    async fn info(
        &self,
        req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let info = self
            .0
            .content
            .info(&ns, &req.into_inner().digest)
            .await
            .or_status()?;
        Ok(Response::new(pb::InfoResponse {
            info: Some(info.convert()),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        let info = req
            .info
            .ok_or_else(|| Error::invalid("info must be set"))
            .or_status()?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self
            .0
            .content
            .update(
                &ns,
                Info {
                    digest: info.digest,
                    labels: info.labels,
                    ..Default::default()
                },
                paths,
            )
            .await
            .or_status()?;
        Ok(Response::new(pb::UpdateResponse {
            info: Some(updated.convert()),
        }))
    }

    type ListStream = Boxed<pb::ListContentResponse>;

    async fn list(
        &self,
        req: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let filter = Filter::parse_all(&req.into_inner().filters).or_status()?;
        let infos = self.0.content.list(&ns, filter).await.or_status()?;
        // Batches, as containerd sends them, so huge stores do not make one huge message.
        let batches: Vec<Result<pb::ListContentResponse, Status>> = infos
            .chunks(100)
            .map(|c| {
                Ok(pb::ListContentResponse {
                    info: c.iter().cloned().map(Convert::convert).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn delete(&self, req: Request<pb::DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let digest = req.into_inner().digest;
        self.0.content.delete(&ns, &digest).await.or_status()?;
        Ok(Response::new(()))
    }

    type ReadStream = Boxed<pb::ReadContentResponse>;

    async fn read(
        &self,
        req: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        let (mut file, size) = self
            .0
            .content
            .open_blob(&ns, &req.digest)
            .await
            .or_status()?;
        if req.offset < 0 || req.offset > size {
            return Err(Error::OutOfRange(format!(
                "read offset {} beyond size {size} of {}",
                req.offset, req.digest
            ))
            .into_status());
        }
        let end = if req.size > 0 {
            (req.offset + req.size).min(size)
        } else {
            size
        };
        let (tx, rx) = mpsc::channel::<Result<pb::ReadContentResponse, Status>>(4);
        let digest = req.digest.clone();
        let start = req.offset;
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(start as u64)) {
                let _ = tx.blocking_send(Err(Error::io("seek blob", &digest, e).into_status()));
                return;
            }
            let mut offset = start;
            while offset < end {
                let want = usize::try_from(end - offset)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let mut buf = vec![0u8; want];
                if let Err(e) = file.read_exact(&mut buf) {
                    let _ = tx.blocking_send(Err(Error::io("read blob", &digest, e).into_status()));
                    return;
                }
                if tx
                    .blocking_send(Ok(pb::ReadContentResponse { offset, data: buf }))
                    .is_err()
                {
                    return; // client went away
                }
                offset += want as i64;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let st = self
            .0
            .content
            .status(&ns, &req.into_inner().r#ref)
            .await
            .or_status()?;
        Ok(Response::new(pb::StatusResponse {
            status: Some(st.convert()),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let filter = Filter::parse_all(&req.into_inner().filters).or_status()?;
        let list = self
            .0
            .content
            .list_statuses(&ns, filter)
            .await
            .or_status()?;
        Ok(Response::new(pb::ListStatusesResponse {
            statuses: list.into_iter().map(Convert::convert).collect(),
        }))
    }

    type WriteStream = Boxed<pb::WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let lease = lease(req.metadata());
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::WriteContentResponse, Status>>(4);
        let s = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = write_session(&s, &ns, lease, &mut input, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, req: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        self.0
            .content
            .abort(&ns, &req.into_inner().r#ref)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }
}

/// One `Write` session over the core's [`WriteSession`]: each request is converted,
/// served, and answered with the writer's state.
async fn write_session(
    s: &Services,
    ns: &str,
    lease: Option<String>,
    input: &mut Streaming<pb::WriteContentRequest>,
    tx: &mpsc::Sender<Result<pb::WriteContentResponse, Status>>,
) -> Result<(), Status> {
    let Some(mut req) = input.message().await? else {
        return Ok(());
    };
    let reference = req.r#ref.clone();
    let mut session =
        WriteSession::open(&s.content, ns, &reference, req.total, &req.expected, lease)
            .await
            .or_status()?;
    // A layer is unpacked as it is written (for the Diff.Apply a client's pull makes next).
    let mut feed = s.differ.feed(ns, &reference);
    loop {
        let action = match WireAction::try_from(req.action) {
            Ok(WireAction::Stat) => WriteAction::Stat,
            Ok(WireAction::Write) => WriteAction::Write,
            Ok(WireAction::Commit) => WriteAction::Commit,
            Err(_) => {
                let e = Error::invalid(format!("unknown write action {}", req.action));
                return Err(e.into_status());
            }
        };
        let data = std::mem::take(&mut req.data);
        let fed = match (&feed, action) {
            (Some(_), WriteAction::Write | WriteAction::Commit) => Some(data.clone()),
            _ => None,
        };
        let state = session
            .step(WriteRequest {
                action,
                offset: req.offset,
                total: req.total,
                expected: std::mem::take(&mut req.expected),
                data,
                labels: std::mem::take(&mut req.labels),
            })
            .await
            .or_status()?;
        if let (Some(f), Some(data)) = (feed.as_mut(), fed) {
            f.wrote(data, state.offset).await;
        }
        let mut msg = pb::WriteContentResponse {
            action: req.action,
            offset: state.offset,
            digest: state.digest,
            ..Default::default()
        };
        if action == WriteAction::Stat {
            msg.started_at = Some(to_timestamp(state.started_at));
            msg.updated_at = Some(to_timestamp(state.updated_at));
            msg.total = state.total;
        }
        if state.committed {
            match feed.take() {
                Some(f) => f.committed(&msg.digest),
                None => s.differ.committed(ns, &reference, &msg.digest),
            }
        }
        if tx.send(Ok(msg)).await.is_err() || state.committed {
            return Ok(());
        }
        match input.message().await? {
            Some(next) => req = next,
            None => return Ok(()),
        }
    }
}
