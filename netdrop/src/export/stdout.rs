//! Drop reports on stdout: a readable line, or one JSON object per line.

use std::io::Write;

use serde::Serialize;

use crate::{
    cli::Output,
    decode::{DropSite, flow::Flow},
};

/// One report about a drop site: its counts so far.
#[derive(Debug, Serialize)]
pub struct DropReport<'a> {
    pub kind: &'static str,
    #[serde(flatten)]
    pub site: &'a DropSite,
    /// Packets dropped at this site since netdrop started.
    pub packets: u64,
    pub bytes: u64,
    /// Packets since the previous report of this site.
    pub new_packets: u64,
    pub evidence: &'static str,
    /// The latest sampled packet of this site (outer flow).
    #[serde(flatten)]
    pub flow: Option<Flow>,
    /// The pod flow inside a VXLAN packet, else null.
    pub inner: Option<Flow>,
    pub vni: Option<u32>,
}

pub struct Printer {
    output: Output,
}

impl Printer {
    pub fn new(output: Output) -> Self {
        Self { output }
    }

    pub fn drop(&self, r: &DropReport<'_>) {
        let mut out = std::io::stdout().lock();
        let res = match self.output {
            Output::Json => serde_json::to_writer(&mut out, r)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out)),
            Output::Text => writeln!(out, "{}", text_line(r)),
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

fn text_line(r: &DropReport<'_>) -> String {
    let s = r.site;
    let mut line = format!("[{}] drop {}", s.node, s.reason);
    if let Some(h) = s.hook {
        line.push_str(&format!(" at {}", h.as_str()));
    }
    if let Some(i) = &s.in_iface {
        line.push_str(&format!(" in {i}"));
    }
    if let Some(o) = &s.out_iface {
        line.push_str(&format!(" out {o}"));
    }
    if let (Some(p), None) = (&s.proto, &r.flow) {
        line.push_str(&format!(" {p}"));
    }
    if let Some(f) = &r.flow {
        line.push_str(&format!(" {f}"));
    }
    if let Some(i) = &r.inner {
        line.push_str(&format!(" [inner {i}, vni {}]", r.vni.unwrap_or(0)));
    }
    line.push_str(&format!(
        " ({}) — {} packets ({} new), {} bytes",
        s.location, r.packets, r.new_packets, r.bytes
    ));
    line
}
