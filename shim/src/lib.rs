//! The per-container shim, `containerd-shim-berth-v2`.
//!
//! Nothing lives here yet: the shim v2 task service, the OCI runtime wrapper, stdio and
//! reaping arrive with the tasks work (see DESIGN.md, "Processes").
