//! Capture: load netdrop's kernel programs into the running kernel, attach
//! them, and read their in-kernel counters.

pub mod btf;
pub mod kallsyms;
pub mod tracefs;

use std::{collections::BTreeMap, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuHashMap},
    programs::{BtfTracePoint, TracePoint},
};
use netdrop_common::{DropConfig, DropCounters, DropKey, KernelLayout};

use self::{btf::KernelBtf, kallsyms::Kallsyms};

/// Which kernel hook feeds the drop counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DropProbe {
    /// `tp_btf/kfree_skb`, falling back to the plain tracepoint.
    Auto,
    /// BTF-typed raw tracepoint: plain loads, the fastest.
    TpBtf,
    /// `tracepoint/skb/kfree_skb`: works where `tp_btf` does not.
    Tracepoint,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error(transparent)]
    Kallsyms(#[from] kallsyms::KallsymsError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("kernel symbol {0} not found in /proc/kallsyms")]
    NoSymbol(&'static str),
    #[error("kernel BTF has no SKB_DROP_REASON_NETFILTER_DROP")]
    NoNetfilterReason,
    #[error("loading netdrop's eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("reading map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

pub struct CaptureOptions {
    pub btf_path: PathBuf,
    pub probe: DropProbe,
}

/// Facts about the running kernel that decoding needs too.
pub struct KernelInfo {
    /// `enum skb_drop_reason` value → name, from BTF.
    pub drop_reasons: BTreeMap<u32, String>,
    pub kallsyms: Kallsyms,
}

/// netdrop's programs, loaded and attached. Dropping it detaches them (all
/// attachments are fd-based links, so SIGKILL leaves nothing behind either).
pub struct Datapath {
    ebpf: Ebpf,
    probe: DropProbe,
}

impl Datapath {
    pub fn load(opts: &CaptureOptions) -> Result<(Self, KernelInfo), CaptureError> {
        let kbtf = KernelBtf::load(&opts.btf_path)?;
        let kallsyms = Kallsyms::load()?;
        let sym = |name: &'static str| kallsyms.addr(name).ok_or(CaptureError::NoSymbol(name));
        let layout = KernelLayout {
            ip_local_deliver: sym("ip_local_deliver")?,
            ip_forward: sym("ip_forward")?,
            // IPv6 may be a module that is not loaded: then no v6 hook.
            ip6_input: kallsyms.addr("ip6_input").unwrap_or(u64::MAX),
            ip6_forward: kallsyms.addr("ip6_forward").unwrap_or(u64::MAX),
            ..kbtf.kernel_layout()?
        };
        let drop_reasons = kbtf.enum_values("skb_drop_reason", "SKB_DROP_REASON_")?;
        let reason_netfilter_drop = drop_reasons
            .iter()
            .find(|(_, n)| *n == "NETFILTER_DROP")
            .map(|(v, _)| *v)
            .ok_or(CaptureError::NoNetfilterReason)?;
        let config = DropConfig {
            reason_netfilter_drop,
            _pad: 0,
        };
        // Only the fallback needs tracefs; keep tp_btf working without it.
        let tp_layout = tracefs::kfree_skb_layout().unwrap_or_default();

        let mut ebpf = EbpfLoader::new()
            .override_global("LAYOUT", &layout, true)
            .override_global("DROP_CONFIG", &config, true)
            .override_global("TP_LAYOUT", &tp_layout, true)
            .load(crate::EBPF_OBJECT)?;

        let probe = match opts.probe {
            DropProbe::TpBtf => attach_tp_btf(&mut ebpf)?,
            DropProbe::Tracepoint => attach_tracepoint(&mut ebpf)?,
            DropProbe::Auto => match attach_tp_btf(&mut ebpf) {
                Ok(p) => p,
                Err(e) => {
                    log::warn!(
                        "tp_btf/kfree_skb unavailable ({e}); using the skb:kfree_skb tracepoint"
                    );
                    attach_tracepoint(&mut ebpf)?
                }
            },
        };
        Ok((
            Self { ebpf, probe },
            KernelInfo {
                drop_reasons,
                kallsyms,
            },
        ))
    }

    /// The probe that is attached (never `Auto`).
    pub fn probe(&self) -> DropProbe {
        self.probe
    }

    /// Every drop site counted so far, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<(DropKey, DropCounters)>, CaptureError> {
        let map = self.ebpf.map("DROPS").ok_or(CaptureError::Map {
            map: "DROPS",
            source: aya::maps::MapError::InvalidName {
                name: "DROPS".into(),
            },
        })?;
        let map: PerCpuHashMap<&MapData, DropKey, DropCounters> = PerCpuHashMap::try_from(map)
            .map_err(|source| CaptureError::Map {
                map: "DROPS",
                source,
            })?;
        let mut out = Vec::new();
        for entry in map.iter() {
            // A key deleted while iterating is skipped, not fatal.
            let (key, per_cpu) = match entry {
                Ok(e) => e,
                Err(e) => {
                    log::debug!("skipping a DROPS entry: {e}");
                    continue;
                }
            };
            let sum = per_cpu
                .iter()
                .fold(DropCounters::default(), |a, c| DropCounters {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                });
            out.push((key, sum));
        }
        Ok(out)
    }
}

fn attach_tp_btf(ebpf: &mut Ebpf) -> Result<DropProbe, CaptureError> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| CaptureError::Program {
        what: "reading kernel BTF for tp_btf".into(),
        source: aya::programs::ProgramError::Btf(e),
    })?;
    let prog: &mut BtfTracePoint = program(ebpf, "netdrop_kfree_skb_btf")?;
    let wrap = |what: &str| {
        let what = what.to_owned();
        move |source| CaptureError::Program { what, source }
    };
    prog.load("kfree_skb", &btf)
        .map_err(wrap("loading tp_btf/kfree_skb"))?;
    prog.attach().map_err(wrap("attaching tp_btf/kfree_skb"))?;
    Ok(DropProbe::TpBtf)
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<DropProbe, CaptureError> {
    // Fail with the tracefs reason rather than a zero-offset program.
    tracefs::kfree_skb_layout()?;
    let prog: &mut TracePoint = program(ebpf, "netdrop_kfree_skb_tp")?;
    let wrap = |what: &str| {
        let what = what.to_owned();
        move |source| CaptureError::Program { what, source }
    };
    prog.load()
        .map_err(wrap("loading tracepoint skb/kfree_skb"))?;
    prog.attach("skb", "kfree_skb")
        .map_err(wrap("attaching tracepoint skb/kfree_skb"))?;
    Ok(DropProbe::Tracepoint)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| CaptureError::Program {
            what: format!("program {name}"),
            source: aya::programs::ProgramError::InvalidName {
                name: name.to_owned(),
            },
        })?;
    p.try_into().map_err(|source| CaptureError::Program {
        what: format!("program {name}"),
        source,
    })
}
