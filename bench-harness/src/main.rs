//! `corebus-bench`: the load generator. Filled by the bench-harness issue.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("corebus-bench is not built yet (see the bench-harness issue)")
}
