//! What operators see of hashroll besides its writes: metrics and the admin server.

pub mod admin;
pub mod metrics;
pub mod process;
