//! The CRI domain (next issue): pod sandboxes and their containers, their state and the
//! pod-level rules. It will use `containers`, `images`, `tasks` (one shim per pod),
//! `network` and `transfer`; none of those may use it. Its front door (the CRI gRPC
//! services) goes next to `berth-services`' `api`, registered in the catalog.
