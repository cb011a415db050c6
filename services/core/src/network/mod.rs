//! The network domain: network namespaces and CNI plugins, shared by CRI pods and `berth
//! run`. What is here: persistent network namespaces ([`netns`]) and the CNI plugin runner
//! ([`cni`]) with the real plugin protocol. Still to come (issues 12 and 13): the networks'
//! records in `metadata`, ADD on task create and DEL on task delete and after a crash, port
//! mappings and names. `tasks` and `cri` may use this module; it uses neither.

pub mod cni;
pub mod netns;

#[cfg(test)]
mod tests;
