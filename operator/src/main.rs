fn main() -> anyhow::Result<()> {
    print!("{}", otter_operator::crd::crd_yaml()?);
    Ok(())
}
