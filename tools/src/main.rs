//! `corebus-ctl`: the admin CLI. Filled by the tools issue.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("corebus-ctl is not built yet (see the tools issue)")
}
