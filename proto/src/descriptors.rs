//! Run-time reflection over the compiled protobuf descriptors.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage};

static POOL: LazyLock<Option<DescriptorPool>> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"))[..]).ok()
});

/// The pool of every message berth's `.proto` files define (plus the well-known types).
pub fn pool() -> Option<&'static DescriptorPool> {
    POOL.as_ref()
}

/// The message name an `Any` type URL refers to: `types.example/x.y.Z` and `x.y.Z` both
/// name `x.y.Z`.
pub fn message_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Decodes the payload of an `Any` into a dynamic message, when its type is one we know.
pub fn decode_any(type_url: &str, value: &[u8]) -> Option<DynamicMessage> {
    let desc = pool()?.get_message_by_name(message_name(type_url))?;
    DynamicMessage::decode(desc, value).ok()
}
