//! The consensus group: a ZAB replicated log and tree. Filled by the consensus issues; it knows
//! neither Kafka nor the broker.
