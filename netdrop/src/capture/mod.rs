//! Capture: load netdrop's kernel programs into the running kernel, attach
//! them, and read their in-kernel counters.

pub mod btf;
pub mod kallsyms;
pub mod kfunc;
pub mod observe;
pub mod tracefs;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, TracePoint},
};
use ipnet::IpNet;
use netdrop_common::{
    CodeRange, DropConfig, DropCounters, DropKey, DropSample, HOOK_RANGES, KernelLayout,
    MAX_POD_CIDRS, PodCidrs, SiteCache, drop_stat, hook,
};

use self::{btf::KernelBtf, kallsyms::Kallsyms};

/// Which kernel hook feeds the drop counters, and how it reads memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DropProbe {
    /// The fastest this kernel runs: `tp-btf`, else `tp-btf-probe-read`,
    /// else `tracepoint`.
    Auto,
    /// BTF-typed raw tracepoint; route and packet read through
    /// `bpf_rdonly_cast` (kernels that cast to `void`): plain loads throughout.
    TpBtf,
    /// BTF-typed raw tracepoint; route and packet read with
    /// `bpf_probe_read_kernel` (kernels that cannot cast to `void`).
    TpBtfProbeRead,
    /// `tracepoint/skb/kfree_skb`: works where `tp_btf` does not.
    Tracepoint,
}

impl DropProbe {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::TpBtf => "tp_btf",
            Self::TpBtfProbeRead => "tp_btf_probe_read",
            Self::Tracepoint => "tracepoint",
        }
    }
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
    #[error("interface observers: {0}")]
    Observer(String),
    #[error("at most {MAX_POD_CIDRS} pod CIDRs per IP family are supported")]
    TooManyCidrs,
    #[error("kernel BTF has no SKB_DROP_REASON_NETFILTER_DROP")]
    NoNetfilterReason,
    #[error(
        "this kernel cannot cast to void with bpf_rdonly_cast (its BTF has no BPF_FEAT_RDONLY_CAST_TO_VOID): use --drop-probe tp-btf-probe-read"
    )]
    NoCast,
    #[error(transparent)]
    Kfunc(#[from] kfunc::KfuncError),
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
    /// Pod CIDRs: drops with a pod address (outer or inner) are kept.
    pub pod_cidrs: Vec<IpNet>,
    /// Keep every drop, pod or not.
    pub keep_all: bool,
    pub vxlan_port: u16,
    /// Detailed samples per second (whole node), beyond each site's first.
    pub sample_rate: u32,
}

/// An IPv6 address as the kernel programs compare it: two 8-byte halves,
/// byte order as loaded.
pub(crate) fn v6_halves(a: std::net::Ipv6Addr) -> (u64, u64) {
    let o = a.octets();
    let mut h = [0u8; 8];
    let mut l = [0u8; 8];
    h.copy_from_slice(&o[..8]);
    l.copy_from_slice(&o[8..]);
    (u64::from_ne_bytes(h), u64::from_ne_bytes(l))
}

/// Pod CIDRs in the kernel's (network, mask) form.
pub fn pod_cidrs(nets: &[IpNet]) -> Result<PodCidrs, CaptureError> {
    let mut c = PodCidrs::default();
    for n in nets {
        match n {
            IpNet::V4(v4) => {
                let i = c.n_v4 as usize;
                if i >= MAX_POD_CIDRS {
                    return Err(CaptureError::TooManyCidrs);
                }
                c.v4[i] = [
                    u32::from_ne_bytes(v4.network().octets()),
                    u32::from_ne_bytes(v4.netmask().octets()),
                ];
                c.n_v4 += 1;
            }
            IpNet::V6(v6) => {
                let i = c.n_v6 as usize;
                if i >= MAX_POD_CIDRS {
                    return Err(CaptureError::TooManyCidrs);
                }
                let (n0, n1) = v6_halves(v6.network());
                let (m0, m1) = v6_halves(v6.netmask());
                c.v6[i] = [n0, n1, m0, m1];
                c.n_v6 += 1;
            }
        }
    }
    Ok(c)
}

/// Facts about the running kernel that decoding needs too.
pub struct KernelInfo {
    /// `enum skb_drop_reason` value → name, from BTF.
    pub drop_reasons: BTreeMap<u32, String>,
    pub kallsyms: Kallsyms,
    /// Linux 6.7 or newer: nf_tables frees the packets its rules drop
    /// itself, so a drop freed by `nf_hook_slow` is not nf_tables'.
    pub nf_tables_frees_own: bool,
}

/// Whether the running kernel is `major.minor` or newer (`uname -r`).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    release_at_least(&release, major, minor)
}

fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// Cumulative cost of one loaded program, as the kernel accounts it while
/// `kernel.bpf_stats_enabled=1` (zero otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    pub run_time_ns: u64,
    pub runs: u64,
}

/// One `BPF_OBJ_GET_INFO_BY_FD` per program: cheap enough for every poll.
pub(crate) fn program_stats(ebpf: &Ebpf) -> Vec<ProgramStats> {
    ebpf.programs()
        .filter_map(|(name, prog)| {
            let info = prog.info().ok()?;
            Some(ProgramStats {
                name: name.to_owned(),
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                runs: info.run_count(),
            })
        })
        .collect()
}

/// The functions that call each netfilter hook: the IPv4 and IPv6 receive,
/// local delivery, forward and output paths, and br_netfilter's for bridged
/// packets (`br_nf_forward_ip`, often split by the compiler into a
/// `.part.0`; `br_nf_forward`, where it is inlined). The innermost return
/// address in one of them names the hook. A module not loaded yet (IPv6,
/// br_netfilter) has none: its drops keep an unknown hook.
fn hook_ranges(kallsyms: &Kallsyms) -> [CodeRange; HOOK_RANGES] {
    let mut out = [CodeRange::default(); HOOK_RANGES];
    let found = [
        ("ip_rcv", hook::PREROUTING),
        ("ipv6_rcv", hook::PREROUTING),
        ("ip_local_deliver", hook::INPUT),
        ("ip6_input", hook::INPUT),
        ("ip_forward", hook::FORWARD),
        ("ip6_forward", hook::FORWARD),
        ("ip_output", hook::POSTROUTING),
        ("ip6_output", hook::POSTROUTING),
        ("br_nf_forward_ip", hook::FORWARD),
        ("br_nf_forward", hook::FORWARD),
        ("br_nf_post_routing", hook::POSTROUTING),
    ]
    .into_iter()
    .flat_map(|(name, h)| {
        kallsyms
            .function_ranges(name)
            .into_iter()
            .map(move |(lo, hi)| CodeRange {
                lo,
                hi,
                hook: h,
                _pad: [0; 7],
            })
    });
    for (slot, range) in out.iter_mut().zip(found) {
        *slot = range;
    }
    out
}

/// netdrop's programs, loaded and attached. Dropping it detaches them (all
/// attachments are fd-based links, so SIGKILL leaves nothing behind either).
pub struct Datapath {
    ebpf: Ebpf,
    probe: DropProbe,
    samples: RingBuf<MapData>,
}

/// The drop programs loaded into the kernel (verified, their maps made),
/// none attached yet: what needs the kernel's BTF is done and its parse
/// freed. `watch` reads the rules between [`Datapath::load`] and
/// [`LoadedDatapath::attach`], so rule counters grow by at least every drop
/// the kernel then counts, and the BTF parse and the ruleset's model are
/// never in memory together.
pub struct LoadedDatapath {
    ebpf: Ebpf,
    /// The first candidate probe that loaded.
    loaded: DropProbe,
    /// The candidates after it, tried only if it does not attach.
    rest: Vec<DropProbe>,
    btf_path: PathBuf,
    samples: RingBuf<MapData>,
}

impl LoadedDatapath {
    /// Attaches the loaded probe, or if it will not attach, the next
    /// candidate that loads and attaches (warning about each that did not).
    pub fn attach(mut self) -> Result<Datapath, CaptureError> {
        let first = self.loaded;
        let mut last = match attach_loaded(&mut self.ebpf, first) {
            Ok(()) => return Ok(self.into_datapath(first)),
            Err(e) => e,
        };
        let mut tried = first;
        for p in std::mem::take(&mut self.rest) {
            log::warn!(
                "drop probe {} unavailable ({last}); trying {}",
                tried.as_str(),
                p.as_str()
            );
            match load_probe(&mut self.ebpf, p, None, &self.btf_path)
                .and_then(|()| attach_loaded(&mut self.ebpf, p))
            {
                Ok(()) => return Ok(self.into_datapath(p)),
                Err(e) => (last, tried) = (e, p),
            }
        }
        Err(last)
    }

    fn into_datapath(self, probe: DropProbe) -> Datapath {
        Datapath {
            ebpf: self.ebpf,
            probe,
            samples: self.samples,
        }
    }
}

impl Datapath {
    /// Loads the drop programs (see [`LoadedDatapath`]); nothing is
    /// attached until [`LoadedDatapath::attach`].
    pub fn load(opts: &CaptureOptions) -> Result<(LoadedDatapath, KernelInfo), CaptureError> {
        let kallsyms = Kallsyms::load()?;
        // The kernel's BTF is parsed twice, once by each library (btf_rs for
        // offsets and names here, aya below to load the programs): never
        // both at once, each is tens of MiB.
        let kbtf = KernelBtf::load(&opts.btf_path)?;
        let sym = |name: &'static str| kallsyms.addr(name).ok_or(CaptureError::NoSymbol(name));
        let layout = KernelLayout {
            ip_local_deliver: sym("ip_local_deliver")?,
            ip_forward: sym("ip_forward")?,
            // IPv6 may be a module that is not loaded: then no v6 hook.
            ip6_input: kallsyms.addr("ip6_input").unwrap_or(u64::MAX),
            ip6_forward: kallsyms.addr("ip6_forward").unwrap_or(u64::MAX),
            dst_discard: kallsyms.addr("dst_discard").unwrap_or(u64::MAX),
            hook_ranges: hook_ranges(&kallsyms),
            ..kbtf.kernel_layout()?
        };
        let drop_reasons = kbtf.enum_values("skb_drop_reason", "SKB_DROP_REASON_")?;
        let reason_netfilter_drop = drop_reasons
            .iter()
            .find(|(_, n)| *n == "NETFILTER_DROP")
            .map(|(v, _)| *v)
            .ok_or(CaptureError::NoNetfilterReason)?;
        let cpus = aya::util::nr_cpus().map(|n| n.max(1) as u32).unwrap_or(1);
        let per_cpu_rate = opts.sample_rate.div_ceil(cpus).max(1);
        let config = DropConfig {
            reason_netfilter_drop,
            vxlan_port: opts.vxlan_port,
            keep_all: u8::from(opts.keep_all),
            _pad: 0,
            sample_rate: per_cpu_rate,
            sample_burst: per_cpu_rate.max(10),
            pod_cidrs: pod_cidrs(&opts.pod_cidrs)?,
        };
        // Only the fallback needs tracefs; keep tp_btf working without it.
        let tp_layout = tracefs::kfree_skb_layout().unwrap_or_default();

        // Without the kfunc, the cast build keeps its placeholder calls and
        // is never loaded.
        let cast = kbtf.rdonly_cast_to_void();
        drop(kbtf);
        // aya's parse serves both the loader and the tp_btf attach (the
        // loader would otherwise parse `/sys/kernel/btf/vmlinux` itself,
        // and not `--btf`).
        let btf = aya::Btf::parse_file(&opts.btf_path, aya::Endianness::default()).ok();
        let object = kfunc::patch_calls(crate::EBPF_OBJECT, cast.unwrap_or(0))?.0;
        let mut loader = EbpfLoader::new();
        loader
            .btf(btf.as_ref())
            .override_global("LAYOUT", &layout, true)
            .override_global("DROP_CONFIG", &config, true)
            .override_global("TP_LAYOUT", &tp_layout, true);
        if let Some(n) = lab_drop_sites() {
            loader.map_max_entries("DROPS", n);
        }
        if let Some(bytes) = lab_sample_ring() {
            loader.map_max_entries("DROP_SAMPLES", bytes);
        }
        let mut ebpf = loader.load(object.bytes())?;

        let order = match opts.probe {
            DropProbe::TpBtf if cast.is_none() => return Err(CaptureError::NoCast),
            DropProbe::Auto if cast.is_none() => {
                vec![DropProbe::TpBtfProbeRead, DropProbe::Tracepoint]
            }
            DropProbe::Auto => vec![
                DropProbe::TpBtf,
                DropProbe::TpBtfProbeRead,
                DropProbe::Tracepoint,
            ],
            one => vec![one],
        };
        let (loaded, rest) = load_first(&mut ebpf, &order, btf.as_ref(), &opts.btf_path)?;
        drop(btf);
        let samples = ebpf.take_map("DROP_SAMPLES").ok_or(CaptureError::Map {
            map: "DROP_SAMPLES",
            source: aya::maps::MapError::InvalidName {
                name: "DROP_SAMPLES".into(),
            },
        })?;
        let samples = RingBuf::try_from(samples).map_err(|source| CaptureError::Map {
            map: "DROP_SAMPLES",
            source,
        })?;
        Ok((
            LoadedDatapath {
                ebpf,
                loaded,
                rest,
                btf_path: opts.btf_path.clone(),
                samples,
            },
            KernelInfo {
                drop_reasons,
                kallsyms,
                nf_tables_frees_own: kernel_at_least(6, 7),
            },
        ))
    }

    /// Kernel time and runs of the drop program (`kernel.bpf_stats_enabled`).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        program_stats(&self.ebpf)
    }

    /// The probe that is attached (never `Auto`).
    pub fn probe(&self) -> DropProbe {
        self.probe
    }

    /// Drains the detailed samples the kernel sent since the last call.
    pub fn samples(&mut self) -> Vec<DropSample> {
        drain(&mut self.samples)
    }

    /// The drop program's own counters (`drop_stat::*`), summed over CPUs.
    pub fn stats(&self) -> Result<[u64; drop_stat::COUNT as usize], CaptureError> {
        summed_counters(&self.ebpf, "DROP_STATS")
    }

    /// Every drop site counted so far, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<(DropKey, DropCounters)>, CaptureError> {
        Ok(
            cached_counts::<SiteCache>(&self.ebpf, "DROP_SITE_CACHE", "DROPS")?
                .into_iter()
                .collect(),
        )
    }
}

/// A per-CPU array of `u64` counters (a program's own `*_STATS`), each
/// summed over CPUs.
pub(crate) fn summed_counters<const N: usize>(
    ebpf: &aya::Ebpf,
    name: &'static str,
) -> Result<[u64; N], CaptureError> {
    let map = ebpf.map(name).ok_or(CaptureError::Map {
        map: name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })?;
    let arr: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(|source| CaptureError::Map { map: name, source })?;
    let mut out = [0u64; N];
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(v) = arr.get(&(i as u32), 0) {
            *slot = v.iter().sum();
        }
    }
    Ok(out)
}

/// A per-CPU slot cache in front of a per-CPU hash map (`SiteCache`,
/// `PeerCache`): the kernel counts each event in exactly one of the two.
pub(crate) trait SlotCache: aya::Pod {
    type Key: aya::Pod + Eq + std::hash::Hash;
    /// The slots that hold a key.
    fn filled(&self) -> impl Iterator<Item = (Self::Key, DropCounters)>;
}

impl SlotCache for SiteCache {
    type Key = DropKey;
    fn filled(&self) -> impl Iterator<Item = (DropKey, DropCounters)> {
        self.slots
            .iter()
            .filter(|s| s.counters.packets > 0)
            .map(|s| (s.key, s.counters))
    }
}

impl SlotCache for netdrop_common::PeerCache {
    type Key = netdrop_common::PeerKey;
    fn filled(&self) -> impl Iterator<Item = (Self::Key, DropCounters)> {
        self.slots
            .iter()
            .filter(|s| s.counters.packets > 0)
            .map(|s| (s.key, s.counters))
    }
}

/// Counts per key over every CPU, from a slot cache and its hash map.
pub(crate) fn cached_counts<C: SlotCache>(
    ebpf: &Ebpf,
    cache: &'static str,
    hash: &'static str,
) -> Result<std::collections::HashMap<C::Key, DropCounters>, CaptureError> {
    let find = |name: &'static str| {
        ebpf.map(name).ok_or(CaptureError::Map {
            map: name,
            source: aya::maps::MapError::InvalidName { name: name.into() },
        })
    };
    let mut sums: std::collections::HashMap<C::Key, DropCounters> =
        std::collections::HashMap::new();
    let mut add = |key: C::Key, c: &DropCounters| {
        let s = sums.entry(key).or_default();
        s.packets += c.packets;
        s.bytes += c.bytes;
    };
    let slots: PerCpuArray<&MapData, C> = PerCpuArray::try_from(find(cache)?)
        .map_err(|source| CaptureError::Map { map: cache, source })?;
    let per_cpu = slots
        .get(&0, 0)
        .map_err(|source| CaptureError::Map { map: cache, source })?;
    for c in per_cpu.iter() {
        for (key, counters) in c.filled() {
            add(key, &counters);
        }
    }
    let map: PerCpuHashMap<&MapData, C::Key, DropCounters> =
        PerCpuHashMap::try_from(find(hash)?)
            .map_err(|source| CaptureError::Map { map: hash, source })?;
    for entry in map.iter() {
        // A key deleted while iterating is skipped, not fatal.
        match entry {
            Ok((key, per_cpu)) => {
                for c in per_cpu.iter() {
                    add(key, c);
                }
            }
            Err(e) => log::debug!("skipping an entry of {hash}: {e}"),
        }
    }
    Ok(sums)
}

/// Loads the first candidate of `order` that loads (warning about the
/// ones before it), and returns it with the candidates after it.
fn load_first(
    ebpf: &mut Ebpf,
    order: &[DropProbe],
    btf: Option<&aya::Btf>,
    btf_path: &Path,
) -> Result<(DropProbe, Vec<DropProbe>), CaptureError> {
    let mut last = None;
    for (i, probe) in order.iter().enumerate() {
        match load_probe(ebpf, *probe, btf, btf_path) {
            Ok(()) => return Ok((*probe, order[i + 1..].to_vec())),
            Err(e) => {
                if let Some(next) = order.get(i + 1) {
                    log::warn!(
                        "drop probe {} unavailable ({e}); trying {}",
                        probe.as_str(),
                        next.as_str()
                    );
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(CaptureError::NoCast))
}

/// The program that implements `probe` (`Auto` is expanded by the caller).
fn program_name(probe: DropProbe) -> &'static str {
    match probe {
        DropProbe::TpBtf => "netdrop_kfree_skb_btf",
        DropProbe::TpBtfProbeRead => "netdrop_kfree_skb_btf_probe_read",
        DropProbe::Tracepoint | DropProbe::Auto => "netdrop_kfree_skb_tp",
    }
}

fn wrap(what: &str) -> impl FnOnce(aya::programs::ProgramError) -> CaptureError {
    let what = what.to_owned();
    move |source| CaptureError::Program { what, source }
}

/// Loads one drop probe. A `tp_btf` build needs the kernel's BTF (parsed
/// from `btf_path`: `--btf`, the running kernel's by default) to name the
/// tracepoint's type: `btf`, or when `None` parsed here.
fn load_probe(
    ebpf: &mut Ebpf,
    probe: DropProbe,
    btf: Option<&aya::Btf>,
    btf_path: &Path,
) -> Result<(), CaptureError> {
    let name = program_name(probe);
    match probe {
        DropProbe::TpBtf | DropProbe::TpBtfProbeRead => {
            let parsed;
            let btf = match btf {
                Some(b) => b,
                None => {
                    parsed = aya::Btf::parse_file(btf_path, aya::Endianness::default()).map_err(
                        |e| CaptureError::Program {
                            what: "reading kernel BTF for tp_btf".into(),
                            source: aya::programs::ProgramError::Btf(e),
                        },
                    )?;
                    &parsed
                }
            };
            let prog: &mut BtfTracePoint = program(ebpf, name)?;
            prog.load("kfree_skb", btf)
                .map_err(wrap("loading tp_btf/kfree_skb"))
        }
        DropProbe::Tracepoint | DropProbe::Auto => {
            // Fail with the tracefs reason rather than a zero-offset program.
            tracefs::kfree_skb_layout()?;
            let prog: &mut TracePoint = program(ebpf, name)?;
            prog.load()
                .map_err(wrap("loading tracepoint skb/kfree_skb"))
        }
    }
}

fn attach_loaded(ebpf: &mut Ebpf, probe: DropProbe) -> Result<(), CaptureError> {
    let name = program_name(probe);
    match probe {
        DropProbe::TpBtf | DropProbe::TpBtfProbeRead => {
            let prog: &mut BtfTracePoint = program(ebpf, name)?;
            prog.attach()
                .map(drop)
                .map_err(wrap("attaching tp_btf/kfree_skb"))
        }
        DropProbe::Tracepoint | DropProbe::Auto => {
            let prog: &mut TracePoint = program(ebpf, name)?;
            prog.attach("skb", "kfree_skb")
                .map(drop)
                .map_err(wrap("attaching tracepoint skb/kfree_skb"))
        }
    }
}

pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, CaptureError>
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

/// The lab's small drop-site map (`NETDROP_LAB_DROP_SITES=N`, the `lab`
/// build only): a test fills it with a few sites to drive the kernel's
/// "map full" path, which 16,384 sites would take too long to reach.
fn lab_drop_sites() -> Option<u32> {
    if !cfg!(feature = "lab") {
        return None;
    }
    std::env::var("NETDROP_LAB_DROP_SITES").ok()?.parse().ok()
}

/// The lab's small drop-sample ring buffer (`NETDROP_LAB_SAMPLE_RING=BYTES`,
/// a power of two of pages; the `lab` build only): a test overflows it
/// with a burst to drive the kernel's "sample lost" path, which 256 KiB
/// and a 250 ms drain would take a flood this machine cannot send.
fn lab_sample_ring() -> Option<u32> {
    if !cfg!(feature = "lab") {
        return None;
    }
    std::env::var("NETDROP_LAB_SAMPLE_RING").ok()?.parse().ok()
}

/// Every item a ring buffer holds now, read as `T`; an item shorter than
/// a `T` (never written by our programs) is passed over. The one place
/// samples cross from the kernel's memory.
pub(crate) fn drain<T: aya::Pod>(ring: &mut RingBuf<MapData>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        if item.len() >= std::mem::size_of::<T>() {
            // SAFETY: the item holds at least size_of::<T>() bytes and T is
            // Pod (repr(C), any bit pattern valid); read_unaligned because
            // ring buffer items are 8-aligned only.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        use super::release_at_least as at;
        assert!(at("6.18.0-1-amd64\n", 6, 7));
        assert!(at("6.7.0", 6, 7));
        assert!(!at("6.6.58-cloud", 6, 7));
        assert!(!at("5.19.0", 6, 7));
        assert!(!at("garbage", 6, 7));
    }
}
