//! `html_report`: formats a run report as one self-contained HTML page (no
//! scripts, no external resources): a summary table, an inline SVG bar
//! chart of copied / skipped / failed counts, an inline SVG chart of bytes
//! copied over time and a table of failures.
//!
//! Memory stays bounded in the number of outcomes: counts, a fixed set of
//! time buckets and at most `max-failures` failures are all that is kept.
//!
//! Config: `max-failures` = N (default 1000), `title` = page title
//! (default "ferry report: job <id>").
//!
//! Stable hooks for tests and styling: `#summary` (table), `#counts-chart`
//! (svg; `rect.bar[data-kind=copied|skipped|failed][data-count]`),
//! `#bytes-chart` (svg; `rect.bytes-over-time[data-bytes][data-from-ms]
//! [data-to-ms]`, `polyline.bytes-cumulative`), `#skips` (table),
//! `#failures` (table; header row in thead, one `tbody tr.failure` per
//! failure shown) and `#failures-more` (the "... and N more" line).

wit_bindgen::generate!({ path: "../../wit", world: "report-formatter" });

#[path = "../../common/config.rs"]
mod config;
#[path = "../../common/failures.rs"]
mod failures;
#[path = "../../common/text.rs"]
mod text;

use std::cell::RefCell;
use std::fmt::Write;

use exports::ferry::plugin::formatter::Guest;
use failures::Failures;
use ferry::plugin::types::{Outcome, OutcomeKind, RunSummary};
use text::{human_bytes, human_duration, thousands};

const NAME: &str = "html_report";
const DEFAULT_MAX_FAILURES: usize = 1000;
/// Bars in the bytes-over-time chart.
const BUCKETS: u64 = 20;
/// Resolution kept while streaming; re-binned to BUCKETS at the end.
const FINE: usize = 240;

struct State {
    max_failures: usize,
    title: Option<String>,
    run: Option<Run>,
}

struct Run {
    summary: RunSummary,
    timeline: Timeline,
    failures: Failures,
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State { max_failures: DEFAULT_MAX_FAILURES, title: None, run: None })
    };
}

/// Bytes copied per time slice, in FINE equal slices of `width` ms from
/// offset 0. When an outcome lands past the end, slices pair up and the
/// width doubles, so the memory is fixed whatever the job's length.
struct Timeline {
    width: u64,
    bytes: [u64; FINE],
    /// Greatest offset seen (any outcome kind); None before the first.
    max_offset: Option<u64>,
}

impl Timeline {
    fn new() -> Self {
        Timeline {
            width: 1,
            bytes: [0; FINE],
            max_offset: None,
        }
    }

    fn add(&mut self, offset_ms: u64, bytes: u64) {
        while offset_ms / self.width >= FINE as u64 {
            for i in 0..FINE / 2 {
                self.bytes[i] = self.bytes[2 * i].saturating_add(self.bytes[2 * i + 1]);
            }
            self.bytes[FINE / 2..].fill(0);
            self.width *= 2;
        }
        let i = (offset_ms / self.width) as usize;
        self.bytes[i] = self.bytes[i].saturating_add(bytes);
        self.max_offset = Some(self.max_offset.map_or(offset_ms, |m| m.max(offset_ms)));
    }

    /// (from-ms, to-ms, bytes) for up to BUCKETS equal slices covering
    /// 0..=max offset. A fine slice that straddles a bucket boundary is
    /// shared in proportion to the overlap (totals stay exact).
    fn buckets(&self) -> Vec<(u64, u64, u64)> {
        let Some(max) = self.max_offset else {
            return Vec::new();
        };
        // Saturating throughout: offsets near u64::MAX must not trap.
        let span = max.saturating_add(1);
        let n = BUCKETS.min(span);
        let cw = span.div_ceil(n);
        let mut out: Vec<(u64, u64, u64)> = (0..n)
            .map(|i| {
                (
                    i.saturating_mul(cw),
                    (i + 1).saturating_mul(cw).min(span),
                    0,
                )
            })
            .collect();
        for (i, &bytes) in self.bytes.iter().enumerate() {
            let start = (i as u64).saturating_mul(self.width);
            if start >= span {
                break;
            }
            if bytes == 0 {
                continue;
            }
            let end = start.saturating_add(self.width).min(span);
            let (first, last) = ((start / cw) as usize, ((end - 1) / cw) as usize);
            let mut left = bytes;
            for (k, bucket) in out.iter_mut().enumerate().take(last + 1).skip(first) {
                let share = if k == last {
                    left
                } else {
                    let overlap = bucket.1.min(end) - bucket.0.max(start);
                    (bytes as u128 * overlap as u128 / (end - start) as u128) as u64
                };
                bucket.2 = bucket.2.saturating_add(share);
                left -= share;
            }
        }
        out
    }
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        config::reject_unknown(NAME, &config, &["max-failures", "title"])?;
        let max = config::usize_or(NAME, &config, "max-failures", DEFAULT_MAX_FAILURES)?;
        let title = config::last(&config, "title").map(str::to_string);
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.max_failures = max;
            s.title = title;
        });
        Ok(())
    }

    fn content_type() -> String {
        "text/html".into()
    }

    fn file_extension() -> String {
        "html".into()
    }

    fn begin(summary: RunSummary) -> Result<(), String> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let failures = Failures::new(s.max_failures);
            s.run = Some(Run {
                summary,
                timeline: Timeline::new(),
                failures,
            });
        });
        Ok(())
    }

    fn add_outcomes(batch: Vec<Outcome>) -> Result<(), String> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let run = s
                .run
                .as_mut()
                .ok_or(format!("{NAME}: add-outcomes called before begin"))?;
            for o in &batch {
                match o.kind {
                    OutcomeKind::Copied => run.timeline.add(o.offset_ms, o.bytes),
                    OutcomeKind::Skipped => run.timeline.add(o.offset_ms, 0),
                    OutcomeKind::Failed => {
                        run.timeline.add(o.offset_ms, 0);
                        run.failures.push(&o.name, &o.detail, &o.at, o.attempt);
                    }
                }
            }
            Ok(())
        })
    }

    fn finish() -> Result<String, String> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let run = s
                .run
                .take()
                .ok_or(format!("{NAME}: finish called before begin"))?;
            Ok(render(&run, s.title.as_deref()))
        })
    }
}

/// Escapes text for HTML content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1f2328;background:#fff}\
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}\
.sub{color:#59636e;margin-top:0}\
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}\
#failures td.name{font-family:ui-monospace,monospace;word-break:break-all}#failures td.detail{white-space:pre-wrap}\
.charts{display:flex;flex-wrap:wrap;gap:2rem}figure{margin:0}figcaption{font-weight:600;margin-bottom:.3rem}\
svg text{font-size:12px;fill:#1f2328}svg .axis{stroke:#8c959f;stroke-width:1}\
.bar[data-kind=copied]{fill:#2da44e}.bar[data-kind=skipped]{fill:#8c959f}.bar[data-kind=failed]{fill:#cf222e}\
.bytes-over-time{fill:#54aeff}.bytes-cumulative{fill:none;stroke:#0550ae;stroke-width:2}\
.state-succeeded{color:#1a7f37}.state-failed,.state-completed-with-failures{color:#cf222e}";

fn render(run: &Run, title: Option<&str>) -> String {
    let s = &run.summary;
    let title = match title {
        Some(t) => t.to_string(),
        None => format!("ferry report: job {}", s.job_id),
    };
    let mut out = String::with_capacity(16 * 1024 + run.failures.kept.len() * 200);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1 id=\"title\">{t}</h1>\n<p class=\"sub\">{src} &rarr; {dst}</p>\n",
        t = esc(&title),
        src = esc(&s.source),
        dst = esc(&s.destination),
    );

    summary_table(&mut out, s);

    out.push_str("<h2>Charts</h2>\n<div class=\"charts\">\n");
    counts_chart(&mut out, s);
    bytes_chart(&mut out, &run.timeline);
    out.push_str("</div>\n");

    out.push_str("<h2>Skips by reason</h2>\n");
    if s.skipped_by_reason.is_empty() {
        out.push_str("<p id=\"no-skips\">No skips.</p>\n");
    } else {
        let mut reasons: Vec<&(String, u64)> = s.skipped_by_reason.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.push_str("<table id=\"skips\">\n<thead><tr><th>Reason</th><th>Count</th></tr></thead>\n<tbody>\n");
        for (reason, n) in reasons {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(reason),
                thousands(*n)
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    failures_table(&mut out, &run.failures);
    out.push_str("</body>\n</html>\n");
    out
}

fn summary_table(out: &mut String, s: &RunSummary) {
    out.push_str("<h2>Summary</h2>\n<table id=\"summary\">\n<tbody>\n");
    let mut row = |key: &str, label: &str, value: String, class: &str| {
        let _ = writeln!(
            out,
            "<tr data-key=\"{key}\"><th>{label}</th><td{class}>{value}</td></tr>"
        );
    };
    row("job-id", "Job", esc(&s.job_id), "");
    row("source", "Source", esc(&s.source), "");
    row("destination", "Destination", esc(&s.destination), "");
    row("mode", "Mode", esc(&s.mode), "");
    let state_class = format!(" class=\"state-{}\"", esc(&s.state));
    row("state", "State", esc(&s.state), &state_class);
    row(
        "attempts",
        "Attempts",
        s.attempts.to_string(),
        " class=\"num\"",
    );
    for (key, label, at) in [
        ("submitted-at", "Submitted", &s.submitted_at),
        ("started-at", "Started", &s.started_at),
        ("ended-at", "Ended", &s.ended_at),
    ] {
        if let Some(at) = at {
            row(key, label, esc(at), "");
        }
    }
    let elapsed = text::elapsed_ms(s.started_at.as_deref(), s.ended_at.as_deref());
    if let Some(ms) = elapsed {
        row("duration", "Duration", human_duration(ms), "");
    }
    let num = " class=\"num\"";
    row("listed", "Listed", thousands(s.listed), num);
    row("copied", "Copied", thousands(s.copied), num);
    row(
        "copied-bytes",
        "Bytes copied",
        format!(
            "{} ({} bytes)",
            human_bytes(s.copied_bytes),
            thousands(s.copied_bytes)
        ),
        num,
    );
    if let Some(rate) = elapsed.and_then(|ms| text::rate(s.copied_bytes, ms)) {
        row("rate", "Average rate", rate, num);
    }
    row("skipped", "Skipped", thousands(s.skipped), num);
    row("failed", "Failed", thousands(s.failed), num);
    out.push_str("</tbody>\n</table>\n");
}

fn counts_chart(out: &mut String, s: &RunSummary) {
    const W: u64 = 360;
    const H: u64 = 240;
    const TOP: u64 = 24; // room for the value labels
    const BOTTOM: u64 = 24; // room for the kind labels
    let plot = H - TOP - BOTTOM;
    let kinds = [
        ("copied", "Copied", s.copied),
        ("skipped", "Skipped", s.skipped),
        ("failed", "Failed", s.failed),
    ];
    let max = kinds.iter().map(|k| k.2).max().unwrap_or(0).max(1);
    let _ = writeln!(
        out,
        "<figure>\n<figcaption>Blobs by outcome</figcaption>\n\
         <svg id=\"counts-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"copied {}, skipped {}, failed {}\">",
        s.copied, s.skipped, s.failed
    );
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"0\" y1=\"{y}\" x2=\"{W}\" y2=\"{y}\"/>",
        y = TOP + plot
    );
    let slot = W / 3;
    let bar_w = slot * 3 / 5;
    for (i, (kind, label, n)) in kinds.iter().enumerate() {
        // Height in proportion; at least 1 px so an empty bar still shows.
        let h = ((*n as u128 * plot as u128 / max as u128) as u64).max(1);
        let x = i as u64 * slot + (slot - bar_w) / 2;
        let y = TOP + plot - h;
        let cx = x + bar_w / 2;
        let _ = writeln!(
            out,
            "<rect class=\"bar\" data-kind=\"{kind}\" data-count=\"{n}\" x=\"{x}\" y=\"{y}\" \
             width=\"{bar_w}\" height=\"{h}\"><title>{label}: {c}</title></rect>\n\
             <text class=\"value\" data-kind=\"{kind}\" x=\"{cx}\" y=\"{vy}\" text-anchor=\"middle\">{c}</text>\n\
             <text class=\"label\" data-kind=\"{kind}\" x=\"{cx}\" y=\"{ly}\" text-anchor=\"middle\">{label}</text>",
            c = thousands(*n),
            vy = y - 6,
            ly = H - 6,
        );
    }
    out.push_str("</svg>\n</figure>\n");
}

fn bytes_chart(out: &mut String, timeline: &Timeline) {
    const W: u64 = 640;
    const H: u64 = 240;
    const LEFT: u64 = 72; // room for the y labels
    const RIGHT: u64 = 12;
    const TOP: u64 = 12;
    const BOTTOM: u64 = 28;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let buckets = timeline.buckets();
    let total: u64 = buckets.iter().map(|b| b.2).fold(0, u64::saturating_add);
    let _ = writeln!(
        out,
        "<figure>\n<figcaption>Bytes copied over time</figcaption>\n\
         <svg id=\"bytes-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{} copied over {} time buckets\">",
        human_bytes(total),
        buckets.len()
    );
    let base = TOP + ph;
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{x2}\" y2=\"{base}\"/>\n\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{base}\"/>",
        x2 = LEFT + pw
    );
    let Some(end) = buckets.last().map(|b| b.1) else {
        let _ = writeln!(
            out,
            "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">No outcomes recorded</text>\n</svg>\n</figure>",
            LEFT + pw / 2,
            TOP + ph / 2
        );
        return;
    };
    let max = buckets.iter().map(|b| b.2).max().unwrap_or(0).max(1);
    let n = buckets.len() as u64;
    let slot = pw / n;
    let bar_w = (slot * 4 / 5).max(1);
    let mut cumulative = 0u64;
    let mut points = format!("{LEFT},{base}");
    for (i, (from, to, bytes)) in buckets.iter().enumerate() {
        let h = (*bytes as u128 * ph as u128 / max as u128) as u64;
        let h = if *bytes > 0 { h.max(1) } else { 0 };
        let x = LEFT + i as u64 * slot + (slot - bar_w) / 2;
        let _ = writeln!(
            out,
            "<rect class=\"bytes-over-time\" data-bytes=\"{bytes}\" data-from-ms=\"{from}\" data-to-ms=\"{to}\" \
             x=\"{x}\" y=\"{y}\" width=\"{bar_w}\" height=\"{h}\"><title>{}–{}: {}</title></rect>",
            human_duration(*from),
            human_duration(*to),
            human_bytes(*bytes),
            y = base - h,
        );
        cumulative = cumulative.saturating_add(*bytes);
        let cy = base - (cumulative as u128 * ph as u128 / total.max(1) as u128) as u64;
        let _ = write!(points, " {},{cy}", LEFT + (i as u64 + 1) * slot);
    }
    let _ = writeln!(
        out,
        "<polyline class=\"bytes-cumulative\" points=\"{points}\"><title>cumulative: {}</title></polyline>",
        human_bytes(total)
    );
    // Axis labels: the busiest bucket's bytes and 0 on y, 0 and the end on x.
    let _ = writeln!(
        out,
        "<text class=\"y-max\" x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{ymax}</text>\n\
         <text class=\"y-min\" x=\"{lx}\" y=\"{base}\" text-anchor=\"end\">0 B</text>\n\
         <text class=\"x-min\" x=\"{LEFT}\" y=\"{xy}\" text-anchor=\"start\">0 s</text>\n\
         <text class=\"x-max\" x=\"{xr}\" y=\"{xy}\" text-anchor=\"end\">{xmax}</text>\n</svg>\n\
         <p class=\"sub\">Bars: bytes copied per {bucket}; line: cumulative ({total_h}).</p>\n</figure>",
        lx = LEFT - 6,
        ty = TOP + 10,
        ymax = human_bytes(max),
        xy = H - 8,
        xr = LEFT + pw,
        xmax = human_duration(end),
        bucket = human_duration(buckets[0].1 - buckets[0].0),
        total_h = human_bytes(total),
    );
}

fn failures_table(out: &mut String, f: &Failures) {
    let _ = writeln!(
        out,
        "<h2>Failures ({})</h2>\n<table id=\"failures\" data-shown=\"{}\" data-total=\"{}\">\n\
         <thead><tr><th>Name</th><th>Detail</th><th>Attempt</th><th>At</th></tr></thead>\n<tbody>",
        thousands(f.total()),
        f.kept.len(),
        f.total()
    );
    for x in &f.kept {
        let _ = writeln!(
            out,
            "<tr class=\"failure\"><td class=\"name\">{}</td><td class=\"detail\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&x.name),
            esc(&x.detail),
            x.attempt,
            esc(&x.at)
        );
    }
    out.push_str("</tbody>\n</table>\n");
    if f.total() == 0 {
        out.push_str("<p id=\"no-failures\">No failures.</p>\n");
    }
    if f.more > 0 {
        let _ = writeln!(
            out,
            "<p id=\"failures-more\">... and {} more (only the first {} are listed; see <code>max-failures</code>)</p>",
            f.more, f.max
        );
    }
}

export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> RunSummary {
        RunSummary {
            job_id: "job<1>".into(),
            source: "s3://src".into(),
            destination: "azure://acct/dst".into(),
            mode: "copy".into(),
            state: "completed-with-failures".into(),
            attempts: 1,
            submitted_at: None,
            started_at: Some("2024-05-01T12:00:00Z".into()),
            ended_at: Some("2024-05-01T12:00:10Z".into()),
            listed: 5,
            copied: 3,
            copied_bytes: 300,
            skipped: 1,
            failed: 1,
            skipped_by_reason: vec![("not-newer".into(), 1)],
        }
    }

    fn outcome(name: &str, kind: OutcomeKind, bytes: u64, offset_ms: u64) -> Outcome {
        Outcome {
            name: name.into(),
            kind,
            bytes,
            at: "2024-05-01T12:00:01Z".into(),
            offset_ms,
            detail: if kind == OutcomeKind::Failed {
                "boom <&>".into()
            } else {
                String::new()
            },
            attempt: 1,
        }
    }

    #[test]
    fn timeline_rebins() {
        let mut t = Timeline::new();
        for ms in 0..10_000u64 {
            t.add(ms, 1);
        }
        assert!(t.width >= 32 && t.width <= 64, "{}", t.width);
        let b = t.buckets();
        assert_eq!(b.len(), 20);
        assert_eq!(b.iter().map(|x| x.2).sum::<u64>(), 10_000);
        assert_eq!(b[0].0, 0);
        assert_eq!(b[19].1, 10_000);
        for x in &b {
            // Each bucket is 500 ms wide, and holds 500 ms worth of bytes.
            assert!(x.2 >= 495 && x.2 <= 505, "{x:?}");
        }
        let mut small = Timeline::new();
        small.add(3, 7);
        assert_eq!(
            small.buckets(),
            vec![(0, 1, 0), (1, 2, 0), (2, 3, 0), (3, 4, 7)]
        );
        assert!(Timeline::new().buckets().is_empty());
        let mut huge = Timeline::new();
        huge.add(u64::MAX - 1, u64::MAX);
        huge.add(0, 5);
        assert_eq!(huge.buckets().iter().map(|x| x.2).max(), Some(u64::MAX));
    }

    #[test]
    fn page() {
        Plugin::configure(vec![("max-failures".into(), "1".into())]).unwrap();
        Plugin::begin(summary()).unwrap();
        Plugin::add_outcomes(vec![
            outcome("a", OutcomeKind::Copied, 100, 0),
            outcome("b", OutcomeKind::Copied, 200, 9_999),
            outcome("c", OutcomeKind::Skipped, 0, 5_000),
            outcome("<script>x</script>", OutcomeKind::Failed, 0, 6_000),
            outcome("e", OutcomeKind::Failed, 0, 7_000),
        ])
        .unwrap();
        let page = Plugin::finish().unwrap();
        std::fs::write(
            std::env::temp_dir().join("ferry-html-report-test.html"),
            &page,
        )
        .unwrap();
        assert!(page.contains("<title>ferry report: job job&lt;1&gt;</title>"));
        assert!(!page.contains("<script"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("boom &lt;&amp;&gt;"));
        assert!(page.contains("id=\"summary\""));
        assert!(page.contains("rect class=\"bar\" data-kind=\"copied\" data-count=\"3\""));
        assert!(page.contains("data-kind=\"skipped\" data-count=\"1\""));
        assert!(page.contains("data-kind=\"failed\" data-count=\"1\""));
        assert_eq!(page.matches("class=\"bytes-over-time\"").count(), 20);
        assert!(page.contains("data-bytes=\"100\" data-from-ms=\"0\" data-to-ms=\"500\""));
        assert!(page.contains("data-bytes=\"200\" data-from-ms=\"9500\" data-to-ms=\"10000\""));
        assert_eq!(page.matches("<tr class=\"failure\">").count(), 1);
        assert!(page.contains("<p id=\"failures-more\">... and 1 more"));
        assert!(page.contains("<td>not-newer</td>"));
        assert!(
            !page.contains("http://")
                || page.matches("http://").count()
                    == page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
    }

    #[test]
    fn empty_run_and_protocol() {
        Plugin::configure(vec![("title".into(), "Nightly & more".into())]).unwrap();
        Plugin::begin(summary()).unwrap();
        let page = Plugin::finish().unwrap();
        assert!(page.contains("<h1 id=\"title\">Nightly &amp; more</h1>"));
        assert!(page.contains("id=\"bytes-chart\"") && page.contains("No outcomes recorded"));
        assert!(page.contains("<p id=\"no-failures\">"));
        assert!(Plugin::finish().is_err());
        assert!(Plugin::add_outcomes(vec![]).is_err());
        assert!(Plugin::configure(vec![("colour".into(), "x".into())])
            .unwrap_err()
            .contains("`colour`"));
        assert_eq!(Plugin::content_type(), "text/html");
        assert_eq!(Plugin::file_extension(), "html");
    }
}
