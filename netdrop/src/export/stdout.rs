//! Records on stdout: readable lines, or one JSON object per line.

use std::io::Write;

use super::record::Record;
/// How records are printed (`--output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub struct Printer {
    output: Output,
}

impl Printer {
    pub fn new(output: Output) -> Self {
        Self { output }
    }

    /// Prints a record; `detail` adds the rule, explanation and fix lines in
    /// text mode (JSON always carries every field).
    pub fn record(&self, r: &Record, detail: bool) {
        let mut out = std::io::stdout().lock();
        let res = match self.output {
            Output::Json => serde_json::to_writer(&mut out, r)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out)),
            Output::Text => writeln!(out, "{}", r.text(detail)),
        };
        // A closed stdout (e.g. `| head`) is not worth a panic.
        let _ = res.and_then(|()| out.flush());
    }

    /// Status for the person at the terminal: on stderr, so stdout stays
    /// pure records in JSON mode.
    pub fn note(&self, msg: &str) {
        eprintln!("{msg}");
    }
}
