//! Line charts as inline SVG: axes, ticks, one polyline per series, a legend.
//!
//! Never: pulls in a script or a font from anywhere (the report must open offline).

use std::fmt::Write;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// How the x axis maps values.
#[derive(Clone, Copy, PartialEq)]
pub enum XScale {
    Linear,
    /// For percentile spectra: x is the quantile q, drawn at -log10(1 - q) so the tail
    /// (99%, 99.9%, ...) gets room, as HdrHistogram's plots do.
    Percentile,
}

pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_scale: XScale,
    pub series: Vec<Series<'a>>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 x 10^k) giving about `count` ticks over `span`.
pub fn nice_step(span: f64, count: usize) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let nice = if normalized <= 1.0 {
        1.0
    } else if normalized <= 2.0 {
        2.0
    } else if normalized <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn percentile_x(q: f64) -> f64 {
    // Clamped at 99.9999% so the maximum (q = 1) lands at the right edge.
    -(1.0 - q.min(0.999_999)).log10()
}

pub fn render(chart: &Chart<'_>) -> String {
    let map_x = |x: f64| match chart.x_scale {
        XScale::Linear => x,
        XScale::Percentile => percentile_x(x),
    };
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in points {
        x_min = x_min.min(map_x(x));
        x_max = x_max.max(map_x(x));
        y_max = y_max.max(y);
    }
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        LEFT,
        escape(chart.title)
    );
    if x_min > x_max {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}">no data</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return out;
    }
    if x_max - x_min < 1e-9 {
        x_max = x_min + 1.0;
    }
    let y_step = nice_step(if y_max > 0.0 { y_max } else { 1.0 }, 5);
    let y_top = (y_max / y_step).ceil().max(1.0) * y_step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (map_x(x) - x_min) / (x_max - x_min) * plot_w;
    let sy = |y: f64| TOP + plot_h - (y / y_top) * plot_h;
    // Grid and y ticks.
    let mut y = 0.0;
    while y <= y_top + y_step / 2.0 {
        let py = sy(y);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            format_tick(y)
        );
        y += y_step;
    }
    // X ticks.
    let x_ticks: Vec<(f64, String)> = match chart.x_scale {
        XScale::Linear => {
            let step = nice_step(x_max - x_min, 8);
            let mut ticks = Vec::new();
            let mut x = (x_min / step).ceil() * step;
            while x <= x_max + step / 1e6 {
                ticks.push((x, format_tick(x)));
                x += step;
            }
            ticks
        }
        XScale::Percentile => [0.0, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999]
            .iter()
            .filter(|&&q| percentile_x(q) <= x_max + 1e-9)
            .map(|&q| (q, format!("{}%", format_tick(q * 100.0))))
            .collect(),
    };
    for (x, label) in x_ticks {
        let px = sx(x);
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0
        );
    }
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0,
        escape(chart.x_label),
        TOP + plot_h / 2.0,
        escape(chart.y_label)
    );
    for (i, series) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut path = String::new();
        for &(x, y) in &series.points {
            let _ = write!(path, "{:.1},{:.1} ", sx(x), sy(y));
        }
        let _ = write!(
            out,
            r#"<polyline class="series" fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            path.trim_end()
        );
        let lx = LEFT + 10.0 + 150.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            TOP + 10.0,
            lx + 16.0,
            TOP + 15.0,
            escape(series.name)
        );
    }
    out.push_str("</svg>");
    out
}

fn format_tick(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(1000.0, 4), 500.0);
        assert_eq!(nice_step(0.3, 3), 0.1);
        assert_eq!(nice_step(0.0, 5), 1.0);
    }

    #[test]
    fn renders_series_and_escapes() {
        let chart = Chart {
            title: "a<b",
            x_label: "s",
            y_label: "ms",
            x_scale: XScale::Percentile,
            series: vec![Series {
                name: "p&q",
                points: vec![(0.0, 1.0), (0.99, 5.0), (1.0, 9.0)],
            }],
        };
        let svg = render(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && svg.contains("p&amp;q"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("99%"));
        let empty = Chart {
            series: vec![],
            ..chart
        };
        assert!(render(&empty).contains("no data"));
    }
}
