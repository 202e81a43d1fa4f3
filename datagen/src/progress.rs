//! Progress bars for long jobs: hours of audio done out of the total, with rate and ETA.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting milliseconds of audio, shown as hours; hidden when `visible` is false or stderr is no terminal.
pub fn hours_bar(total_ms: u64, visible: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total_ms),
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {hours} h of {total_hours} h ({audio_rate}) ETA {eta}",
        )
        .expect("the progress template is valid")
        .with_key("hours", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.3}", s.pos() as f64 / 3.6e6);
        })
        .with_key(
            "total_hours",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.3}", s.len().unwrap_or(0) as f64 / 3.6e6);
            },
        )
        .with_key(
            "audio_rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let secs = s.elapsed().as_secs_f64().max(1e-9);
                let _ = write!(w, "{:.0}x real time", s.pos() as f64 / 1000.0 / secs);
            },
        ),
    );
    bar
}

/// A bar counting items (utterances, files).
pub fn items_bar(total: u64, visible: bool, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {what} ETA {{eta}}"
        ))
        .expect("the progress template is valid"),
    );
    bar
}
