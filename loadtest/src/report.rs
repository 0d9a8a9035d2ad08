//! `--report DIR`: a markdown report (the summary, the command line, the machine, the date)
//! and SVG plots drawn by hand: latency percentiles per second, deliveries per second, and
//! (`idle`) the server's memory per connection as connections open.

use std::fmt::Write as _;
use std::path::Path;

use crate::idle::RssSample;
use crate::stats::Second;

/// One line of a plot.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Its name in the legend.
    pub(crate) name: String,
    /// Its colour (any SVG colour).
    pub(crate) color: &'static str,
    /// Its points, `(x, y)`.
    pub(crate) points: Vec<(f64, f64)>,
    /// A dot at each point too (for a few points, or a single one).
    pub(crate) markers: bool,
}

/// Escapes text for XML.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round upper bound for an axis: 1, 2 or 5 times a power of ten, at least `max`.
pub(crate) fn nice_ceiling(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= max * (1.0 - 1e-12) {
            return m * p;
        }
    }
    10.0 * p
}

/// A line chart as an SVG document: axes with 5 ticks each, one polyline per series, a
/// legend.
pub(crate) fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 400.0;
    const L: f64 = 70.0; // left margin
    const R: f64 = 150.0; // right margin (legend)
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    let (pw, ph) = (W - L - R, H - T - B);
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = nice_ceiling(all.clone().map(|p| p.0).fold(0.0, f64::max));
    // Headroom, so that a flat line does not run along the frame.
    let y_max = nice_ceiling(all.map(|p| p.1).fold(0.0, f64::max) * 1.05);
    let sx = |x: f64| L + x / x_max * pw;
    let sy = |y: f64| T + ph - y / y_max * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        L + pw / 2.0,
        xml(title)
    );
    // Grid and ticks.
    for k in 0..=5 {
        let f = f64::from(k) / 5.0;
        let (x, y) = (sx(f * x_max), sy(f * y_max));
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>
<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>
<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/>
<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            L + pw,
            L - 6.0,
            y + 4.0,
            tick(f * y_max),
            T + ph,
            T + ph + 16.0,
            tick(f * x_max)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="black"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        L + pw / 2.0,
        H - 12.0,
        xml(x_label),
        T + ph / 2.0,
        T + ph / 2.0,
        xml(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline class="series" data-name="{}" fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            xml(&se.name),
            se.color,
            pts.join(" ")
        );
        if se.markers {
            for &(x, y) in &se.points {
                let _ = writeln!(
                    s,
                    r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    sx(x),
                    sy(y),
                    se.color
                );
            }
        }
        let ly = T + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/>
<text x="{:.1}" y="{:.1}">{}</text>"#,
            L + pw + 12.0,
            L + pw + 32.0,
            se.color,
            L + pw + 38.0,
            ly + 4.0,
            xml(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A tick label: no more digits than it needs.
fn tick(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The latency plot of a timeline: p50, p99 and max per second.
pub(crate) fn latency_chart(seconds: &[Second]) -> String {
    let pick = |f: fn(&Second) -> f64| -> Vec<(f64, f64)> {
        seconds
            .iter()
            .filter(|s| s.deliveries > 0)
            .map(|s| (s.second as f64, f(s)))
            .collect()
    };
    line_chart(
        "Delivery latency per second (scheduled send to receipt)",
        "seconds since the first publication",
        "latency (ms)",
        &[
            Series {
                name: "p50".into(),
                color: "#1f77b4",
                points: pick(|s| s.p50_ms),
                markers: false,
            },
            Series {
                name: "p99".into(),
                color: "#ff7f0e",
                points: pick(|s| s.p99_ms),
                markers: false,
            },
            Series {
                name: "max".into(),
                color: "#d62728",
                points: pick(|s| s.max_ms),
                markers: false,
            },
        ],
    )
}

/// The deliveries-per-second plot of a timeline.
pub(crate) fn deliveries_chart(seconds: &[Second]) -> String {
    line_chart(
        "Deliveries per second",
        "seconds since the first publication",
        "deliveries/s",
        &[Series {
            name: "deliveries/s".into(),
            color: "#2ca02c",
            points: seconds
                .iter()
                .map(|s| (s.second as f64, s.deliveries as f64))
                .collect(),
            markers: false,
        }],
    )
}

/// The plot of the server's memory per connection (RSS growth since before opening, KiB)
/// against the connections open when it was read.
pub(crate) fn memory_chart(samples: &[RssSample]) -> String {
    line_chart(
        "Server memory per connection vs connections",
        "connections (connected and subscribed)",
        "RSS growth per connection (KiB)",
        &[Series {
            name: "KiB/connection".into(),
            color: "#9467bd",
            points: samples
                .iter()
                .map(|s| (s.connections as f64, s.bytes_per_connection / 1024.0))
                .collect(),
            markers: true,
        }],
    )
}

/// A plot of its own in the report: its file in DIR, the text of its image link, the SVG.
#[derive(Debug, Clone)]
pub(crate) struct Plot {
    /// File name in DIR.
    pub(crate) file: &'static str,
    /// The image's alt text in report.md.
    pub(crate) alt: &'static str,
    /// The SVG document.
    pub(crate) svg: String,
}

/// A section of report.md after the per-second plots: a heading, its plot if there is one,
/// then markdown (a table, or why there is no plot).
#[derive(Debug, Clone)]
pub(crate) struct Section {
    /// The `##` heading.
    pub(crate) heading: &'static str,
    /// The plot.
    pub(crate) plot: Option<Plot>,
    /// Markdown after the plot.
    pub(crate) text: String,
}

/// The date and time now, UTC, as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc(secs)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar).
pub(crate) fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The CPU model (`/proc/cpuinfo`) and the CPUs available (what `nproc` prints).
pub(crate) fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("{model}; {cpus} CPUs available (nproc)")
}

/// Writes `report.md`, when `seconds` is not empty `latency.svg` and `deliveries.svg`, and
/// the plots of `sections` into `dir` (created if missing).
pub(crate) fn write(
    dir: &Path,
    scenario: &str,
    summary: &str,
    seconds: &[Second],
    sections: &[Section],
) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("--report {}: cannot create it: {e}", dir.display()))?;
    let put = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("--report: cannot write {}: {e}", p.display()))
    };
    let args: Vec<String> = std::env::args().collect();
    let mut md = format!(
        "# loadtest {scenario}\n\n- date: {}\n- machine: {}\n- command: `{}`\n\n## Summary\n\n```\n{}```\n",
        utc_now(),
        machine(),
        args.join(" ").replace('`', "'"),
        summary
    );
    if seconds.is_empty() {
        if sections.is_empty() {
            md.push_str("\nNo deliveries: no plots.\n");
        }
    } else {
        put("latency.svg", &latency_chart(seconds))?;
        put("deliveries.svg", &deliveries_chart(seconds))?;
        md.push_str(
            "\n## Over time\n\n![latency percentiles per second](latency.svg)\n\n\
             ![deliveries per second](deliveries.svg)\n\n\
             | second | deliveries | p50 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|\n",
        );
        for s in seconds {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.2} | {:.2} |",
                s.second, s.deliveries, s.p50_ms, s.p99_ms, s.max_ms
            );
        }
    }
    for section in sections {
        let _ = write!(md, "\n## {}\n\n", section.heading);
        if let Some(p) = &section.plot {
            put(p.file, &p.svg)?;
            let _ = write!(md, "![{}]({})\n\n", p.alt, p.file);
        }
        md.push_str(&section.text);
        if !md.ends_with('\n') {
            md.push('\n');
        }
    }
    put("report.md", &md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds() -> Vec<Second> {
        (0..5)
            .map(|i| Second {
                second: i,
                deliveries: 100 * (i + 1),
                p50_ms: 1.0 + i as f64,
                p99_ms: 5.0 + i as f64,
                max_ms: 9.5,
            })
            .collect()
    }

    /// Start and end tags balance (self-closing ones aside), and nothing is left unescaped.
    fn balanced(svg: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            let Some(j) = rest[i..].find('>') else {
                return false;
            };
            let tag = &rest[i + 1..i + j];
            rest = &rest[i + j + 1..];
            if tag.starts_with('?') || tag.ends_with('/') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return false;
                }
            } else {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
        stack.is_empty()
    }

    #[test]
    fn latency_chart_is_well_formed_with_three_series() {
        let svg = latency_chart(&seconds());
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(balanced(&svg), "{svg}");
        for name in ["p50", "p99", "max"] {
            assert!(svg.contains(&format!("data-name=\"{name}\"")), "{name}");
        }
        assert_eq!(svg.matches("<polyline").count(), 3);
        // Five points per series.
        let line = svg
            .lines()
            .find(|l| l.contains("data-name=\"p50\""))
            .unwrap();
        let pts = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"/>");
        assert_eq!(pts.split(' ').count(), 5);
    }

    #[test]
    fn deliveries_chart_and_escaping() {
        let svg = deliveries_chart(&seconds());
        assert!(balanced(&svg) && svg.contains("data-name=\"deliveries/s\""));
        let svg = line_chart(
            "a < b & c",
            "x",
            "y",
            &[Series {
                name: "\"q\"".into(),
                color: "red",
                points: vec![],
                markers: true,
            }],
        );
        assert!(balanced(&svg), "{svg}");
        assert!(svg.contains("a &lt; b &amp; c") && svg.contains("&quot;q&quot;"));
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(0.042), 0.05);
        assert_eq!(nice_ceiling(70_000.0), 100_000.0);
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.4), "0.4");
        assert_eq!(tick(2000.0), "2000");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(1.25), "1.25");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn the_report_is_written() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-{}", fastrand::u64(..)));
        write(&dir, "fanout", "fanout: 1 subscriber\n", &seconds(), &[]).unwrap();
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("# loadtest fanout") && md.contains("fanout: 1 subscriber"));
        assert!(md.contains("![latency percentiles per second](latency.svg)"));
        assert!(md.contains("CPUs available"));
        assert!(dir.join("latency.svg").exists() && dir.join("deliveries.svg").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn samples() -> Vec<RssSample> {
        crate::idle::rss_curve(
            10 << 20,
            &[
                (500, (10 << 20) + 2_048_000),
                (1000, (10 << 20) + 4_000_000),
            ],
        )
    }

    /// The `(x, y)` pixel pairs of the polyline of series `name`.
    fn polyline(svg: &str, name: &str) -> Vec<(f64, f64)> {
        let line = svg
            .lines()
            .find(|l| l.contains(&format!("data-name=\"{name}\"")))
            .unwrap();
        line.split("points=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"/>")
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn memory_chart_has_a_point_per_sample() {
        let svg = memory_chart(&samples());
        assert!(balanced(&svg), "{svg}");
        assert!(svg.contains("Server memory per connection vs connections"));
        assert!(svg.contains("RSS growth per connection (KiB)"));
        // 4096 and 4000 bytes per connection: 4 and 3.90625 KiB, on axes of 0..1000
        // connections and 0..5 KiB; the plot area is 580 × 310 px from (70, 40).
        let pts = polyline(&svg, "KiB/connection");
        assert_eq!(pts.len(), 2, "{svg}");
        let expect = [
            (70.0 + 0.5 * 580.0, 40.0 + 310.0 - 4.0 / 5.0 * 310.0),
            (70.0 + 580.0, 40.0 + 310.0 - 3.90625 / 5.0 * 310.0),
        ];
        for ((x, y), (ex, ey)) in pts.iter().zip(expect) {
            assert!((x - ex).abs() < 0.06 && (y - ey).abs() < 0.06, "{pts:?}");
        }
        // A dot on each, so that a single sample shows too.
        assert_eq!(svg.matches("<circle class=\"point\"").count(), 2);
        let one = memory_chart(&samples()[..1]);
        assert_eq!(one.matches("<circle class=\"point\"").count(), 1);
        // The per-second plots have none.
        assert!(!latency_chart(&seconds()).contains("<circle"));
    }

    #[test]
    fn sections_add_their_plots_to_the_report() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-{}", fastrand::u64(..)));
        let memory = Section {
            heading: "Server memory per connection",
            plot: Some(Plot {
                file: "memory.svg",
                alt: "server memory per connection vs connections",
                svg: memory_chart(&samples()),
            }),
            text: "| connections |\n|---:|\n| 500 |".into(),
        };
        let none = Section {
            heading: "Nothing",
            plot: None,
            text: "No --pid: no plot.\n".into(),
        };
        write(&dir, "idle", "idle: 2 connections\n", &[], &[memory, none]).unwrap();
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(!md.contains("No deliveries"), "{md}");
        assert!(
            md.contains(
                "## Server memory per connection\n\n\
                 ![server memory per connection vs connections](memory.svg)\n\n\
                 | connections |\n|---:|\n| 500 |\n"
            ),
            "{md}"
        );
        assert!(md.contains("## Nothing\n\nNo --pid: no plot.\n"), "{md}");
        let svg = std::fs::read_to_string(dir.join("memory.svg")).unwrap();
        assert!(svg.contains("data-name=\"KiB/connection\""));
        assert!(!dir.join("latency.svg").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
