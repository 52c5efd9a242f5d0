//! [`ShareSeries`] and [`svg`]: each host's share of calls over time, drawn
//! as a hand-written SVG (one panel per scenario and policy, one line per
//! route slot), so ejection, probing and slow start show at a glance.

use std::fmt::Write as _;
use std::time::Duration;

use crate::engine::Trace;
use crate::scenario::{Scenario, Workload};

/// Line colours by route slot; slot 0 (the bad host of most scenarios) red.
const PALETTE: [&str; 10] = [
    "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Each route slot's share of the calls, per time bucket, over the start of
/// a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareSeries {
    /// The scenario's name.
    pub scenario: String,
    /// The balancer's name.
    pub policy: String,
    /// Bucket length.
    pub bucket: Duration,
    /// End of the plotted range (from t = 0).
    pub until: Duration,
    /// Per slot: the labels of its hosts (`h0`, `h0→n0`).
    pub labels: Vec<String>,
    /// Per slot: whether one of its hosts is ever bad.
    pub bad: Vec<bool>,
    /// Per slot, per bucket: the share of that bucket's calls (rejected
    /// calls included) sent to the slot's host, in `[0, 1]`.
    pub shares: Vec<Vec<f64>>,
    /// A fair share: 1 / hosts in the route.
    pub fair: f64,
    /// When at least one host is bad (merged, clipped to the range).
    pub bad_spans: Vec<(Duration, Duration)>,
}

impl ShareSeries {
    /// The default bucket and range for a workload: buckets of at least 1 s
    /// and at least 10 calls per host (10 * hosts / rate), over the first
    /// 120 s or 60 buckets, whichever is longer (never past the run).
    pub fn auto_range(w: &Workload) -> (Duration, Duration) {
        let bucket = Duration::from_secs_f64((10.0 * w.hosts as f64 / w.rate).max(1.0));
        let until = Duration::from_secs(120).max(bucket * 60).min(w.duration());
        (bucket, until)
    }

    /// The series of `trace`, a run of `scenario` by `policy`.
    pub fn from_trace(
        scenario: &Scenario,
        policy: &str,
        trace: &Trace,
        bucket: Duration,
        until: Duration,
    ) -> Self {
        let bucket = bucket.max(Duration::from_millis(1));
        let slots = scenario.hosts.iter().map(|h| h.slot + 1).max().unwrap_or(0);
        let mut labels = vec![String::new(); slots];
        let mut bad = vec![false; slots];
        for h in &scenario.hosts {
            let l = &mut labels[h.slot];
            if !l.is_empty() {
                l.push('→');
            }
            l.push_str(&h.label);
            bad[h.slot] |= h.phases.iter().any(|p| p.bad);
        }
        let n_buckets = (until.as_secs_f64() / bucket.as_secs_f64()).ceil() as usize;
        let mut total = vec![0u64; n_buckets];
        let mut count = vec![vec![0u64; n_buckets]; slots];
        for c in trace.calls.iter().take_while(|c| c.at < until) {
            let b = ((c.at.as_secs_f64() / bucket.as_secs_f64()) as usize)
                .min(n_buckets.saturating_sub(1));
            total[b] += 1;
            if let Some(h) = c.host {
                count[scenario.hosts[h].slot][b] += 1;
            }
        }
        let shares = count
            .iter()
            .map(|v| {
                v.iter()
                    .zip(&total)
                    .map(|(&c, &t)| if t == 0 { 0.0 } else { c as f64 / t as f64 })
                    .collect()
            })
            .collect();
        let mut spans: Vec<(Duration, Duration)> = scenario
            .bad_episodes()
            .iter()
            .filter(|e| e.from < until)
            .map(|e| (e.from, e.until.min(until)))
            .collect();
        spans.sort();
        let mut bad_spans: Vec<(Duration, Duration)> = Vec::new();
        for (a, b) in spans {
            match bad_spans.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => bad_spans.push((a, b)),
            }
        }
        Self {
            scenario: scenario.name.clone(),
            policy: policy.to_owned(),
            bucket,
            until,
            labels,
            bad,
            shares,
            fair: 1.0 / scenario.route.len().max(1) as f64,
            bad_spans,
        }
    }
}

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 210.0;
const ROW_HEAD: f64 = 22.0;
const TOP: f64 = 46.0;
const M_LEFT: f64 = 46.0;
const M_RIGHT: f64 = 14.0;
const M_TOP: f64 = 20.0;
const M_BOTTOM: f64 = 30.0;

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving at most
/// `max_ticks` ticks over `range`.
fn nice_step(range: f64, max_ticks: f64) -> f64 {
    let raw = (range / max_ticks).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

/// Draws `panels` as one SVG document: one row per scenario (a header with
/// the legend of its slots), one panel per policy, each showing every slot's
/// share of calls per bucket, the fair share (dashed) and the times a host
/// is bad (shaded).
pub fn svg(panels: &[ShareSeries], title: &str) -> String {
    // Rows: consecutive panels of the same scenario.
    let mut rows: Vec<Vec<&ShareSeries>> = Vec::new();
    for p in panels {
        match rows.last_mut() {
            Some(r) if r[0].scenario == p.scenario => r.push(p),
            _ => rows.push(vec![p]),
        }
    }
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let width = PANEL_W * cols as f64;
    let height = TOP + rows.len() as f64 * (ROW_HEAD + PANEL_H) + 8.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        o,
        r##"<text x="10" y="38" font-size="11" fill="#555">share of calls per host and time bucket; dashed: fair share; shaded: a host is bad</text>"##
    );
    for (r, row) in rows.iter().enumerate() {
        let y0 = TOP + r as f64 * (ROW_HEAD + PANEL_H);
        let first = row[0];
        let _ = write!(
            o,
            r#"<text x="10" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
            y0 + 15.0,
            esc(&first.scenario)
        );
        let mut x = 10.0 + 9.0 * first.scenario.chars().count() as f64 + 16.0;
        for (s, label) in first.labels.iter().enumerate().take(24) {
            let text = if first.bad[s] {
                format!("{label} (bad)")
            } else {
                label.clone()
            };
            let _ = write!(
                o,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="4" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
                y0 + 9.0,
                PALETTE[s % PALETTE.len()],
                x + 15.0,
                y0 + 14.0,
                esc(&text)
            );
            x += 22.0 + 6.0 * text.chars().count() as f64;
        }
        let _ = writeln!(o);
        for (c, p) in row.iter().enumerate() {
            panel(&mut o, p, PANEL_W * c as f64, y0 + ROW_HEAD);
        }
    }
    o.push_str("</svg>\n");
    o
}

fn panel(o: &mut String, p: &ShareSeries, x0: f64, y0: f64) {
    let (pw, ph) = (PANEL_W - M_LEFT - M_RIGHT, PANEL_H - M_TOP - M_BOTTOM);
    let (left, top) = (x0 + M_LEFT, y0 + M_TOP);
    let t_end = p.until.as_secs_f64().max(1e-9);
    let peak = p.shares.iter().flatten().copied().fold(0.0, f64::max);
    let ystep = nice_step((peak * 1.05).max(2.5 * p.fair).min(1.0), 4.0);
    let ymax = ((peak * 1.05).max(2.5 * p.fair).min(1.0) / ystep).ceil() * ystep;
    let xs = |t: f64| left + pw * (t / t_end).clamp(0.0, 1.0);
    let ys = |v: f64| top + ph * (1.0 - (v / ymax).clamp(0.0, 1.0));
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
        left,
        top - 6.0,
        esc(&p.policy)
    );
    for &(a, b) in &p.bad_spans {
        let _ = writeln!(
            o,
            r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{ph:.1}" fill="#fbe1e1"/>"##,
            xs(a.as_secs_f64()),
            (xs(b.as_secs_f64()) - xs(a.as_secs_f64())).max(0.5)
        );
    }
    // Axes and ticks.
    let _ = writeln!(
        o,
        r##"<rect x="{left:.1}" y="{top:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#999"/>"##
    );
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let y = ys(v);
        let _ = writeln!(
            o,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{left:.1}" y2="{y:.1}" stroke="#999"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{:.0}%</text>"##,
            left - 4.0,
            left - 6.0,
            y + 3.5,
            v * 100.0
        );
        v += ystep;
    }
    let xstep = nice_step(t_end, 8.0);
    let mut t = 0.0;
    while t <= t_end + 1e-9 {
        let x = xs(t);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{t}</text>"##,
            top + ph,
            top + ph + 4.0,
            top + ph + 15.0
        );
        t += xstep;
    }
    let _ = writeln!(
        o,
        r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">time (s), bucket {} s</text>"##,
        left + pw,
        top + ph + 27.0,
        p.bucket.as_secs_f64()
    );
    let _ = writeln!(
        o,
        r##"<line x1="{left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#444" stroke-dasharray="4 3"/>"##,
        left + pw,
        y = ys(p.fair)
    );
    let b = p.bucket.as_secs_f64();
    // Bad slots last, so they are drawn on top.
    let mut order: Vec<usize> = (0..p.shares.len()).collect();
    order.sort_by_key(|&s| p.bad[s]);
    for s in order {
        let mut pts = String::new();
        for (k, &v) in p.shares[s].iter().enumerate() {
            let t = ((k as f64 + 0.5) * b).min(t_end);
            let _ = write!(pts, "{:.1},{:.1} ", xs(t), ys(v));
        }
        let _ = writeln!(
            o,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}"/>"#,
            pts.trim_end(),
            PALETTE[s % PALETTE.len()],
            if p.bad[s] { 2.0 } else { 1.2 }
        );
    }
}
