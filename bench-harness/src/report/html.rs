//! `report.html`: one self-contained page (inline CSS and SVG, no script) with the summary,
//! throughput over time, latency percentiles over time and the latency distribution.

use std::fmt::Write;

use super::svg::{Chart, Series, XScale, render as chart};
use crate::run::RunResult;
use crate::stats::Percentiles;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The percentiles drawn over time.
type Pick = fn(&Percentiles) -> f64;
const LATENCY_LINES: [(&str, Pick); 4] = [
    ("p50", |p| p.p50),
    ("p99", |p| p.p99),
    ("p99.9", |p| p.p999),
    ("max", |p| p.max),
];

pub fn render(r: &RunResult) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>corebus-bench: {}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}.bad{{color:#b00;font-weight:bold}}\
         svg{{display:block;margin:1em 0}}</style></head><body>",
        escape(&r.workload)
    );
    let _ = write!(
        out,
        "<h1>{}</h1><p>Against <code>{}</code> ({} broker(s)); {}; {} s measured after {} s \
         warm-up{}.</p>",
        escape(&r.workload),
        escape(&r.brokers),
        r.broker_count,
        super::shape(r),
        r.duration_s,
        r.warmup_s,
        if r.backlog_s > 0 {
            format!(", consumers paused for the first {} s", r.backlog_s)
        } else {
            String::new()
        }
    );
    let t = &r.throughput;
    let _ = write!(
        out,
        "<h2>Summary</h2><table><tr><th></th><th>msg/s</th><th>MB/s</th></tr>\
         <tr><th>produce</th><td>{:.0}</td><td>{:.2}</td></tr>\
         <tr><th>consume</th><td>{:.0}</td><td>{:.2}</td></tr></table>",
        t.produce_msgs_per_s, t.produce_mb_per_s, t.consume_msgs_per_s, t.consume_mb_per_s
    );
    out.push_str("<h3>Latency (ms)</h3><table>");
    for row in super::latency_cells(r) {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let tag = if i == 0 { "th" } else { "td" };
            let _ = write!(out, "<{tag}>{cell}</{tag}>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    let (line, mismatch) = super::accounting(r);
    let _ = write!(out, "<h3>Accounting</h3><p>{line}.</p>");
    if let Some(m) = mismatch {
        let _ = write!(out, "<p class=\"bad\">{m}</p>");
    }
    for e in &r.error_samples {
        let _ = write!(out, "<p class=\"bad\">error: {}</p>", escape(e));
    }
    let xs = |f: &dyn Fn(&crate::run::SecondPoint) -> f64| -> Vec<(f64, f64)> {
        r.series.iter().map(|p| (p.second as f64, f(p))).collect()
    };
    out.push_str("<h2>Throughput over time</h2>");
    out.push_str(&chart(&Chart {
        title: "Throughput (records/s)",
        x_label: "seconds since start (warm-up included)",
        y_label: "records/s",
        x_scale: XScale::Linear,
        series: vec![
            Series {
                name: "acknowledged",
                points: xs(&|p| p.produce_msgs_per_s as f64),
            },
            Series {
                name: "consumed",
                points: xs(&|p| p.consume_msgs_per_s as f64),
            },
        ],
    }));
    out.push_str("<h2>Latency percentiles over time</h2>");
    for (title, pick) in [
        (
            "Publish latency per second (ms)",
            (|p: &crate::run::SecondPoint| p.publish_ms)
                as fn(&crate::run::SecondPoint) -> Percentiles,
        ),
        ("End-to-end latency per second (ms)", |p| p.end_to_end_ms),
    ] {
        let with_data: Vec<_> = r.series.iter().filter(|p| pick(p).count > 0).collect();
        let line = |f: fn(&Percentiles) -> f64| -> Vec<(f64, f64)> {
            with_data
                .iter()
                .map(|p| (p.second as f64, f(&pick(p))))
                .collect()
        };
        out.push_str(&chart(&Chart {
            title,
            x_label: "seconds since start",
            y_label: "ms",
            x_scale: XScale::Linear,
            series: LATENCY_LINES
                .iter()
                .map(|&(name, f)| Series {
                    name,
                    points: line(f),
                })
                .collect(),
        }));
    }
    out.push_str("<h2>Latency distribution (measured phase)</h2>");
    out.push_str(&chart(&Chart {
        title: "Latency by percentile (ms)",
        x_label: "percentile",
        y_label: "ms",
        x_scale: XScale::Percentile,
        series: vec![
            Series {
                name: "publish",
                points: r.publish_spectrum.clone(),
            },
            Series {
                name: "end-to-end",
                points: r.end_to_end_spectrum.clone(),
            },
        ],
    }));
    out.push_str("</body></html>\n");
    out
}
