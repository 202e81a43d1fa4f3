//! The training curve as an SVG image: training loss and validation WER against the step.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::MetricsLine;

const W: f64 = 800.0;
const H: f64 = 400.0;
const PAD: f64 = 60.0;

fn polyline(points: &[(f64, f64)], x_max: f64, y_min: f64, y_max: f64, color: &str) -> String {
    let span = (y_max - y_min).max(1e-12);
    let pts: Vec<String> = points
        .iter()
        .map(|&(x, y)| {
            let px = PAD + (x / x_max.max(1.0)) * (W - 2.0 * PAD);
            let py = H - PAD - ((y - y_min) / span) * (H - 2.0 * PAD);
            format!("{px:.1},{py:.1}")
        })
        .collect();
    format!(
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
        pts.join(" ")
    )
}

/// Renders loss (left axis, blue) and validation WER in % (right axis, red) against the step.
pub fn render_svg(history: &[MetricsLine]) -> String {
    let x_max = history.iter().map(|m| m.step as f64).fold(1.0, f64::max);
    let loss: Vec<(f64, f64)> = history
        .iter()
        .filter(|m| m.loss.is_finite())
        .map(|m| (m.step as f64, m.loss))
        .collect();
    let wer: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|m| m.val_wer.map(|w| (m.step as f64, w * 100.0)))
        .collect();
    let l_max = loss.iter().map(|p| p.1).fold(0.0, f64::max);
    let w_max = wer.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="black"/><line x1="{r}" y1="{PAD}" x2="{r}" y2="{b}" stroke="black"/>"#,
        b = H - PAD,
        r = W - PAD
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step (0 to {x_max})</text>"#,
        W / 2.0,
        H - 20.0
    );
    let _ = write!(
        s,
        r##"<text x="10" y="30" fill="#1f5fbf">training loss (0 to {l_max:.3})</text>"##
    );
    let _ = write!(
        s,
        r##"<text x="{}" y="30" text-anchor="end" fill="#c0392b">validation WER % (0 to {w_max:.1})</text>"##,
        W - 10.0
    );
    if !loss.is_empty() {
        s.push_str(&polyline(&loss, x_max, 0.0, l_max, "#1f5fbf"));
    }
    if !wer.is_empty() {
        s.push_str(&polyline(&wer, x_max, 0.0, w_max, "#c0392b"));
    }
    s.push_str("</svg>\n");
    s
}

/// Writes the curve atomically.
pub fn write_svg(path: &Path, history: &[MetricsLine]) -> Result<()> {
    mezcla_datagen::atomic::write_atomic(path, render_svg(history).as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))
}
