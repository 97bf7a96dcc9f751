//! `corebus`: the server binary.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the corebus server is not built yet (see the broker issue)")
}
