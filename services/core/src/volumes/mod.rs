//! The volumes domain (next issues): named volumes, their records and their lifetime,
//! shared by `berth run -v` and CRI mounts. It will use `metadata` and `leases`; nothing
//! below it may use it.
