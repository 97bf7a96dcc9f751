//! The end-of-run summary as a plain-text table.

use std::fmt::Write;

use crate::run::RunResult;

pub fn render(r: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== {} against {} ({} broker(s)), {} s measured after {} s warm-up",
        r.workload, r.brokers, r.broker_count, r.duration_s, r.warmup_s
    );
    let _ = writeln!(out, "   {}", super::shape(r));
    let t = &r.throughput;
    let _ = writeln!(
        out,
        "   produce {:.0} msg/s {:.2} MB/s | consume {:.0} msg/s {:.2} MB/s",
        t.produce_msgs_per_s, t.produce_mb_per_s, t.consume_msgs_per_s, t.consume_mb_per_s
    );
    for row in super::latency_cells(r) {
        for (i, cell) in row.iter().enumerate() {
            let _ = match i {
                0 => write!(out, "{cell:<16}"),
                _ => write!(out, "{cell:>11}"),
            };
        }
        out.push('\n');
    }
    let (line, mismatch) = super::accounting(r);
    let _ = writeln!(out, "   {line}");
    if let Some(m) = mismatch {
        let _ = writeln!(out, "   {m}");
    }
    if !r.coordinated_omission_corrected {
        let _ = writeln!(
            out,
            "   note: rate = max is a closed loop; latency counts from the actual send time"
        );
    }
    for e in &r.error_samples {
        let _ = writeln!(out, "   error: {e}");
    }
    out
}
