//! HTML: the layout, shared pieces and the call-status chart (inline SVG,
//! rendered on the server; the pages use no script and no external asset).

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::validate::FieldErrors;

const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2933;background:#f4f6f8}
header{background:#1d3557;color:#fff;display:flex;align-items:center;gap:18px;padding:0 20px;height:48px}
header .brand{font-weight:700;font-size:17px;letter-spacing:.5px;margin-right:8px}
header nav a{color:#cfd8e3;text-decoration:none;padding:14px 8px;display:inline-block}
header nav a.on,header nav a:hover{color:#fff;border-bottom:3px solid #e9c46a}
header .who{margin-left:auto;display:flex;gap:10px;align-items:center;color:#cfd8e3}
header .who button{background:transparent;color:#fff;border:1px solid #cfd8e3;border-radius:4px;padding:3px 10px;cursor:pointer}
main{max-width:1100px;margin:22px auto;padding:0 20px}
h1{font-size:22px;margin:0 0 14px}
h2{font-size:16px;margin:22px 0 10px}
.card{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:14px 16px;margin-bottom:16px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e6eaef;vertical-align:top}
th{background:#eef2f6;font-weight:600;color:#3e4c59}
tr.overload td{background:#fde2e1}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600}
.badge.bad{background:#e63946;color:#fff}
.badge.ok{background:#2a9d8f;color:#fff}
form.inline{display:inline-flex;gap:6px;align-items:flex-start;margin:0}
.row{display:flex;gap:10px;flex-wrap:wrap;align-items:flex-start}
.field{display:flex;flex-direction:column;gap:3px}
.field label{font-size:12px;color:#52606d}
input,textarea{font:inherit;padding:5px 8px;border:1px solid #bcc6d0;border-radius:4px;background:#fff}
input.bad,textarea.bad{border-color:#e63946;background:#fff5f5}
.err{color:#c1121f;font-size:12px;max-width:260px}
button{font:inherit;padding:5px 12px;border-radius:4px;border:1px solid #1d3557;background:#1d3557;color:#fff;cursor:pointer}
button.danger{background:#fff;color:#c1121f;border-color:#c1121f}
button.plain{background:#fff;color:#1d3557}
.flash{background:#e8f5e9;border:1px solid #a5d6a7;border-radius:6px;padding:8px 12px;margin-bottom:14px}
.alert{background:#fdecea;border:1px solid #f5c2c0;border-radius:6px;padding:8px 12px;margin-bottom:14px;color:#8a1c1c}
.muted{color:#7b8794}
.stats{display:flex;gap:14px;flex-wrap:wrap}
.stat{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:12px 16px;min-width:170px}
.stat b{display:block;font-size:22px}
a{color:#1d4e89}
code{background:#eef2f6;padding:1px 4px;border-radius:3px}
.login{max-width:340px;margin:90px auto}
.login .field{margin-bottom:10px}.login input{width:100%}
"#;

/// The nav entries: path and label.
const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/mods", "ModIDs"),
    ("/cmds", "CmdIDs"),
    ("/routes", "Routes"),
    ("/versions", "Versions"),
    ("/status", "Call status"),
];

/// What every logged-in page needs to render its frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub user: &'a str,
    pub csrf: &'a str,
    pub nav: &'a str,
}

fn head(title: &str) -> Markup {
    html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · lars console" }
        style { (PreEscaped(CSS)) }
    }
}

/// A logged-in page.
pub(crate) fn page(frame: Frame<'_>, title: &str, body: Markup) -> Markup {
    html! {
        (head(title))
        header {
            span.brand { "lars" }
            nav {
                @for (path, label) in NAV {
                    a.on[*path == frame.nav] href=(path) { (label) }
                }
            }
            div.who {
                span { (frame.user) }
                form.inline method="post" action="/logout" {
                    (csrf_field(frame.csrf))
                    button type="submit" { "Log out" }
                }
            }
        }
        main { (body) }
    }
}

/// A page without the logged-in frame (errors before login).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (head(title))
        header { span.brand { "lars" } }
        main { (body) }
    }
}

/// The login form.
pub(crate) fn login(csrf: &str, name: &str, error: Option<&str>) -> Markup {
    html! {
        (head("Log in"))
        div.login {
            div.card {
                h1 { "lars console" }
                @if let Some(e) = error { div.alert #login-error { (e) } }
                form method="post" action="/login" {
                    (csrf_field(csrf))
                    div.field {
                        label for="username" { "User" }
                        input #username name="username" value=(name) autocomplete="username" autofocus required;
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password name="password" type="password" autocomplete="current-password" required;
                    }
                    button #login type="submit" { "Log in" }
                }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A labelled input with its error message under it.
pub(crate) fn field(
    name: &str,
    label: &str,
    value: &str,
    errors: &FieldErrors,
    size: u32,
    id: Option<&str>,
) -> Markup {
    let err = errors.get(name);
    let id = id.map(str::to_owned).unwrap_or_else(|| format!("f-{name}"));
    html! {
        div.field {
            label for=(id) { (label) }
            input.bad[err.is_some()] id=(id) name=(name) value=(value) size=(size);
            @if let Some(e) = err { span.err data-field=(name) { (e) } }
        }
    }
}

/// A green note after a successful change.
pub(crate) fn flash(msg: Option<String>) -> Markup {
    html! { @if let Some(m) = msg { div.flash #flash { (m) } } }
}

/// A red note (store errors that belong to no field).
pub(crate) fn alert(msg: Option<&str>) -> Markup {
    html! { @if let Some(m) = msg { div.alert #alert { (m) } } }
}

/// Formats unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn time(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) date (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `HH:MM` of unix seconds (UTC).
fn hhmm(ts: i64) -> String {
    let s = ts.rem_euclid(86_400);
    format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// An SVG line chart of successes (green) and errors (red) per minute:
/// `(minute, successes, errors)` points, oldest first.
pub(crate) fn chart(points: &[(i64, u64, u64)]) -> Markup {
    const W: f64 = 1000.0;
    const H: f64 = 260.0;
    const L: f64 = 56.0;
    const R: f64 = 16.0;
    const T: f64 = 16.0;
    const B: f64 = 34.0;
    let max = points
        .iter()
        .map(|p| p.1.max(p.2))
        .max()
        .unwrap_or(0)
        .max(1);
    let top = nice_ceiling(max);
    let n = points.len().max(2) as f64;
    let x = |i: usize| L + (W - L - R) * i as f64 / (n - 1.0);
    let y = |v: u64| T + (H - T - B) * (1.0 - v as f64 / top as f64);
    let line = |pick: fn(&(i64, u64, u64)) -> u64| -> String {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(pick(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let succ = line(|p| p.1);
    let err = line(|p| p.2);
    let total_s: u64 = points.iter().map(|p| p.1).sum();
    let total_e: u64 = points.iter().map(|p| p.2).sum();
    html! {
        svg #chart xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {W} {H}")) width="100%" role="img"
            aria-label=(format!("successes and errors per minute: {total_s} successes, {total_e} errors")) {
            rect x="0" y="0" width=(W) height=(H) fill="#fff" {}
            @for k in 0..=4u64 {
                @let v = top * k / 4;
                line x1=(L) x2=(W - R) y1=(y(v)) y2=(y(v)) stroke="#e6eaef" {}
                text x=(L - 6.0) y=(y(v) + 4.0) font-size="11" text-anchor="end" fill="#7b8794" { (v) }
            }
            @for (i, p) in points.iter().enumerate() {
                @if i % 10 == 0 || i + 1 == points.len() {
                    text x=(x(i)) y=(H - 12.0) font-size="11" text-anchor="middle" fill="#7b8794" { (hhmm(p.0)) }
                }
            }
            polyline points=(succ) fill="none" stroke="#2a9d8f" stroke-width="2" {}
            polyline points=(err) fill="none" stroke="#e63946" stroke-width="2" {}
            rect x=(L + 10.0) y="6" width="10" height="10" fill="#2a9d8f" {}
            text x=(L + 25.0) y="15" font-size="12" fill="#3e4c59" { "successes / min (" (total_s) " in the hour)" }
            rect x=(L + 250.0) y="6" width="10" height="10" fill="#e63946" {}
            text x=(L + 265.0) y="15" font-size="12" fill="#3e4c59" { "errors / min (" (total_e) ")" }
        }
    }
}

/// The smallest of 1, 2, 5 × 10^k at or above `v`, divisible by 4 when
/// large enough for round grid labels.
fn nice_ceiling(v: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1u64, 2, 4, 5, 8] {
            let c = step.saturating_mul(m);
            if c >= v {
                return c.max(4);
            }
        }
        step = step.saturating_mul(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(hhmm(3_660), "01:01");
    }

    #[test]
    fn chart_scales() {
        assert_eq!(nice_ceiling(1), 4);
        assert_eq!(nice_ceiling(7), 8);
        assert_eq!(nice_ceiling(33), 40);
        assert_eq!(nice_ceiling(90), 100);
        let svg = chart(&[(0, 3, 1), (60, 5, 0)]).into_string();
        assert!(svg.contains("polyline"));
        assert!(svg.contains("8 successes"));
    }
}
