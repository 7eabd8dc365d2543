//! README's metrics table, read the same way by the tests that check it against `/metrics`
//! (tests/metrics.rs) and against the chart's alerts and dashboard (tests/chart_monitoring.rs).

/// The cells of each row of the table under `## Metrics` in README.md: name, type, labels, meaning.
pub fn metrics_rows() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a ## Metrics section")
        .split("\n## ")
        .next()
        .unwrap()
        .to_string();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// The `ticked` words of a cell, in order.
pub fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}
