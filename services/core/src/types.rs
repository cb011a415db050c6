//! Small value types shared by the core modules.

use prost::Message;

/// An opaque typed payload (a protobuf `Any`): a container spec, runtime options, an event.
/// The core stores and returns it untouched.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct AnyValue {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}
