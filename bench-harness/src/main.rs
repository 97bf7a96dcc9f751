//! `corebus-bench`: a Kafka load generator and capacity planner that speaks the protocol
//! itself (through `wire`), so it can load any Kafka-compatible broker.

mod client;

fn main() -> anyhow::Result<()> {
    anyhow::bail!("corebus-bench: commands come next")
}
