//! What a run leaves behind: the summary table on stdout, `result.json`, `report.html`.
//!
//! Never: needs the network to be read (the HTML inlines its SVG plots and has no script).

pub mod html;
pub mod svg;
pub mod table;

use std::path::Path;

use anyhow::Context;

use crate::run::RunResult;
use crate::stats::PERCENTILES;

/// The latency table both renderings show: a header row (percentile labels, max, count),
/// then publish and end-to-end rows, values in ms with 3 decimals.
pub fn latency_cells(r: &RunResult) -> Vec<Vec<String>> {
    let mut header = vec!["latency (ms)".to_owned()];
    header.extend(PERCENTILES.iter().map(|(label, _)| (*label).to_owned()));
    header.extend(["max".to_owned(), "count".to_owned()]);
    let mut rows = vec![header];
    for (label, p) in [
        ("publish", &r.publish_latency_ms),
        ("end-to-end", &r.end_to_end_latency_ms),
    ] {
        let mut row = vec![label.to_owned()];
        row.extend(p.values().iter().map(|v| format!("{v:.3}")));
        row.push(p.count.to_string());
        rows.push(row);
    }
    rows
}

/// The workload's shape in one line (topics, partitions, sizes, clients, acks, codec, batching,
/// offered rate).
pub fn shape(r: &RunResult) -> String {
    format!(
        "{} topic(s) x {} partitions, {} B messages, {} producer(s), {} consumer(s), acks={}, \
         compression={}, batch {} B, linger {} ms, offered {}",
        r.topics,
        r.partitions_per_topic,
        r.message_size,
        r.producers,
        r.consumers,
        r.acks,
        r.compression,
        r.batch_bytes,
        r.linger_ms,
        r.offered_msgs_per_s.map_or(
            "max (closed loop: latency from actual send times)".to_owned(),
            |x| format!("{x:.0} msg/s (latency from intended send times)")
        ),
    )
}

/// The record accounting in one sentence, and the mismatch warning if there is one.
pub fn accounting(r: &RunResult) -> (String, Option<String>) {
    let line = format!(
        "sent {}, acknowledged {}, consumed {}, errors {} (produce {}, consume {}), foreign records {}",
        r.sent,
        r.produced,
        r.consumed,
        r.errors,
        r.produce_errors,
        r.consume_errors,
        r.foreign_records
    );
    let mismatch = r.mismatch.then(|| {
        format!(
            "MISMATCH: {} acknowledged record(s) not consumed{}",
            r.missing,
            if r.missing < 0 {
                " (more consumed than acknowledged: duplicates)"
            } else {
                ""
            }
        )
    });
    (line, mismatch)
}

/// Writes `dir/result.json` and `dir/report.html`.
pub fn write(dir: &Path, result: &RunResult) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(result).context("serializing the result")?;
    let json_path = dir.join("result.json");
    std::fs::write(&json_path, json).with_context(|| format!("writing {}", json_path.display()))?;
    let html_path = dir.join("report.html");
    std::fs::write(&html_path, html::render(result))
        .with_context(|| format!("writing {}", html_path.display()))?;
    Ok(())
}
