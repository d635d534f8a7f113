//! The small value types every process of the appliance agrees on, below every other
//! crate: an IP prefix ([`IpPrefix`]) and why a source is denied ([`DenyReason`]). The
//! configuration, the data plane, detection and the messages between tasks all use these,
//! so a prefix or a reason is parsed once, where it enters, and travels typed. And one
//! way to put an error with its causes on one line ([`error_chain`]), for every log
//! message and error reply.

mod prefix;
mod reason;

pub use prefix::IpPrefix;
pub use reason::DenyReason;

/// An error and its causes on one line, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
