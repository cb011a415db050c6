//! The network domain (next issues): network namespaces, CNI plugins, port mappings and
//! names, shared by CRI pods and `berth run`. It will use `metadata` for its records and
//! `events` for its events; `tasks` and `cri` may use it, it uses neither.
