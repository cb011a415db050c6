//! The docker-style verbs (`run`, `ps`, `logs`, `exec`, ...). How berth keeps a docker-style
//! container in containerd's records is told in [`crate::labels`]; what the verbs share
//! lives in the client layer ([`crate::client::containers`], [`crate::client::docker`],
//! [`crate::client::logs`]).

pub mod cp;
pub mod exec;
pub mod filesystem;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod port;
pub mod ps;
pub mod run;
pub mod stats;
pub mod top;
