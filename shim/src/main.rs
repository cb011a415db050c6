//! `containerd-shim-berth-v2`: see the `berth_shim` library.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    containerd_shim::asynchronous::run::<berth_shim::shim::BerthShim>(
        berth_shim::shim::RUNTIME_NAME,
        Some(berth_shim::shim::config()),
    )
    .await;
}
