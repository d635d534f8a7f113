//! The small value types every process of the appliance agrees on, below every other
//! crate: an IP prefix ([`IpPrefix`]) and why a source is denied ([`DenyReason`]). The
//! configuration, the data plane, detection and the messages between tasks all use these,
//! so a prefix or a reason is parsed once, where it enters, and travels typed.

mod prefix;
mod reason;

pub use prefix::IpPrefix;
pub use reason::DenyReason;
