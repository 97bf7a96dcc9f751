//! One file per command group.

pub mod cluster;
pub mod consensus;
pub mod consume;
pub mod group;
pub mod log;
pub mod partition;
pub mod produce;
pub mod topic;
