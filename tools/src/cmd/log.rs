//! `log dump|verify DIR`, offline: a partition directory (or a data directory holding many)
//! read through the storage engine's own inspection code (`corebus_broker::storage::inspect`).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use corebus_broker::storage::inspect::{PartitionReport, inspect_partition};
use serde_json::{Value, json};

use crate::output::{Format, Table, print_table};
use crate::{Failure, Outcome};

/// Decompressed bytes one batch may expand to when its records are dumped.
const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

#[derive(Subcommand)]
pub enum LogCommand {
    /// Print every batch (and with --records every record) of the partitions under DIR
    Dump {
        dir: PathBuf,
        /// Print records too
        #[arg(long)]
        records: bool,
    },
    /// Check CRCs, offsets and indexes; exit 1 when anything is wrong
    Verify { dir: PathBuf },
}

/// DIR itself when it holds segment files, else its subdirectories that do, sorted.
fn partition_dirs(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let has_segments = |d: &Path| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
    };
    if has_segments(dir) {
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Failure::Refused(format!("cannot read {}: {e}", dir.display())))?;
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && has_segments(p))
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(Failure::Refused(format!(
            "{} holds no partition directories (no .log segment files)",
            dir.display()
        )));
    }
    Ok(dirs)
}

fn reports(dir: &Path) -> Result<Vec<PartitionReport>, Failure> {
    partition_dirs(dir)?
        .iter()
        .map(|d| {
            inspect_partition(d)
                .map_err(|e| Failure::Refused(format!("cannot read {}: {e}", d.display())))
        })
        .collect()
}

fn text(b: &Option<bytes::Bytes>) -> Value {
    b.as_ref()
        .map_or(Value::Null, |b| json!(String::from_utf8_lossy(b)))
}

pub fn run(command: LogCommand, format: Format) -> Outcome {
    match command {
        LogCommand::Dump { dir, records } => dump(&dir, records, format),
        LogCommand::Verify { dir } => verify(&dir, format),
    }
}

fn dump(dir: &Path, with_records: bool, format: Format) -> Outcome {
    let mut out = Vec::new();
    for report in reports(dir)? {
        for seg in &report.segments {
            let mut batches = Vec::new();
            for b in &seg.batches {
                let h = &b.header;
                let mut v = json!({
                    "base_offset": h.base_offset,
                    "last_offset": h.last_offset(),
                    "records": h.record_count,
                    "position": b.position,
                    "bytes": h.total_len(),
                    "leader_epoch": h.partition_leader_epoch,
                    "max_timestamp": h.max_timestamp,
                    "attributes": h.attributes,
                    "producer_id": h.producer_id,
                    "producer_epoch": h.producer_epoch,
                    "base_sequence": h.base_sequence,
                    "crc_ok": b.crc_ok,
                });
                if let Some(batch) = b.batch() {
                    v["compression"] = json!(format!("{:?}", batch.compression().ok()));
                    v["control"] = json!(batch.is_control());
                    v["transactional"] = json!(batch.is_transactional());
                    if with_records {
                        let recs = batch
                            .records_with_limit(MAX_DECOMPRESSED_BATCH_BYTES)
                            .map_err(|e| {
                                Failure::Refused(format!("batch {}: {e}", h.base_offset))
                            })?;
                        let mut list = Vec::new();
                        for r in recs {
                            let r = r.map_err(|e| {
                                Failure::Refused(format!("batch {}: {e}", h.base_offset))
                            })?;
                            let headers: Vec<Value> = r
                                .headers
                                .iter()
                                .map(|x| json!({"key": String::from_utf8_lossy(&x.key), "value": text(&x.value)}))
                                .collect();
                            list.push(json!({
                                "offset": h.base_offset + i64::from(r.offset_delta),
                                "timestamp": h.base_timestamp + r.timestamp_delta,
                                "key": text(&r.key),
                                "value": text(&r.value),
                                "headers": headers,
                            }));
                        }
                        v["record_list"] = Value::Array(list);
                    }
                }
                batches.push(v);
            }
            out.push(json!({
                "partition_dir": report.dir.display().to_string(),
                "segment": seg.path.display().to_string(),
                "base_offset": seg.base_offset,
                "bytes": seg.size_bytes,
                "index_entries": seg.index_entries,
                "time_index_entries": seg.time_index_entries,
                "batches": batches,
                "problems": seg.problems,
                "notes": seg.notes,
            }));
        }
    }
    match format {
        Format::Json => println!("{}", Value::Array(out)),
        Format::Text => {
            for seg in &out {
                println!(
                    "segment {} ({} bytes, {} index entries)",
                    seg["segment"].as_str().unwrap_or(""),
                    seg["bytes"],
                    seg["index_entries"]
                );
                for b in seg["batches"].as_array().into_iter().flatten() {
                    println!(
                        "  offsets {}..{} records {} position {} bytes {} max_timestamp {} compression {} producer {}/{}/{} crc {}",
                        b["base_offset"],
                        b["last_offset"],
                        b["records"],
                        b["position"],
                        b["bytes"],
                        b["max_timestamp"],
                        b["compression"].as_str().unwrap_or("?"),
                        b["producer_id"],
                        b["producer_epoch"],
                        b["base_sequence"],
                        if b["crc_ok"] == json!(true) {
                            "ok"
                        } else {
                            "BAD"
                        },
                    );
                    for r in b["record_list"].as_array().into_iter().flatten() {
                        println!(
                            "    offset {} timestamp {} key {} value {} headers {}",
                            r["offset"], r["timestamp"], r["key"], r["value"], r["headers"]
                        );
                    }
                }
                for p in seg["problems"].as_array().into_iter().flatten() {
                    println!("  PROBLEM: {}", p.as_str().unwrap_or(""));
                }
                for n in seg["notes"].as_array().into_iter().flatten() {
                    println!("  note: {}", n.as_str().unwrap_or(""));
                }
            }
        }
    }
    Ok(())
}

fn verify(dir: &Path, format: Format) -> Outcome {
    let mut table = Table::new(&[
        "partition_dir",
        "segments",
        "batches",
        "next_offset",
        "clean_shutdown",
        "problems",
    ]);
    let mut bad = 0usize;
    for report in reports(dir)? {
        let problems = report.all_problems();
        bad += problems.len();
        let batches: usize = report.segments.iter().map(|s| s.batches.len()).sum();
        let next = report
            .segments
            .iter()
            .rev()
            .find_map(|s| s.batches.last())
            .map(|b| b.header.next_offset());
        table.row(vec![
            json!(report.dir.display().to_string()),
            json!(report.segments.len()),
            json!(batches),
            json!(next),
            json!(report.clean_shutdown),
            json!(problems),
        ]);
    }
    print_table(format, &table);
    if bad == 0 {
        Ok(())
    } else {
        Err(Failure::Refused(format!("{bad} problems found")))
    }
}
