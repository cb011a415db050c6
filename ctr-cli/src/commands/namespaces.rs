//! `berth namespaces`: create, ls, label, rm.

use berth_proto::containerd::services::namespaces::v1 as pb;
use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use clap::Subcommand;

use crate::client::{Client, status};
use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a namespace, with optional KEY=VALUE labels.
    Create { name: String, labels: Vec<String> },
    /// List namespaces.
    #[command(alias = "list")]
    Ls {
        /// Print only the names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Set labels (KEY=VALUE; KEY= removes) on a namespace.
    Label { name: String, labels: Vec<String> },
    /// Remove namespaces (they must be empty).
    #[command(alias = "remove", alias = "delete")]
    Rm { names: Vec<String> },
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    let mut api = NamespacesClient::new(c.channel.clone());
    match cmd {
        Cmd::Create { name, labels } => {
            let labels = output::parse_labels(&labels);
            api.create(c.req(pb::CreateNamespaceRequest {
                namespace: Some(pb::Namespace { name, labels }),
            }))
            .await
            .map_err(status)?;
        }
        Cmd::Ls { quiet } => {
            let list = api
                .list(c.req(pb::ListNamespacesRequest {
                    filter: String::new(),
                }))
                .await
                .map_err(status)?
                .into_inner()
                .namespaces;
            if quiet {
                for n in &list {
                    println!("{}", n.name);
                }
            } else if format == Format::Json {
                output::json(&serde_json::Value::Array(
                    list.iter()
                        .map(|n| serde_json::json!({"name": n.name, "labels": n.labels}))
                        .collect(),
                ))?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|n| vec![n.name.clone(), output::labels(&n.labels)])
                    .collect();
                output::table(&["NAME", "LABELS"], &rows)?;
            }
        }
        Cmd::Label { name, labels } => {
            let (labels, mask) = output::label_update(&labels);
            let ns = api
                .update(c.req(pb::UpdateNamespaceRequest {
                    namespace: Some(pb::Namespace { name, labels }),
                    update_mask: Some(mask),
                }))
                .await
                .map_err(status)?
                .into_inner()
                .namespace
                .unwrap_or_default();
            println!("{}", output::labels(&ns.labels));
        }
        Cmd::Rm { names } => {
            output::remove_each(
                names,
                |name| {
                    let mut api = api.clone();
                    async move {
                        api.delete(c.req(pb::DeleteNamespaceRequest { name }))
                            .await
                            .map(drop)
                    }
                },
                |name| name.to_string(),
                |name| format!("unable to delete {name}"),
            )
            .await
            // As ctr, the error names the namespace too.
            .map_err(|f| anyhow::anyhow!("{}: {}", f.what, f.message))?;
        }
    }
    Ok(())
}
