//! One file per command group.

pub mod cluster;
pub mod consume;
pub mod log;
pub mod produce;
pub mod topic;
