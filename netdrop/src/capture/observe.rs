//! Interface observers on one node: TC (tcx) programs on its overlay
//! (`flannel.1`), bridge (`cni0`) and underlay NIC, loaded once per node so
//! nodes never mix counters. Attached through links inside the node's
//! namespace; dropping [`NodeObservers`] detaches them.

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{
            NlOptions, SchedClassifierLink, TcAttachOptions, TcError, qdisc_add_clsact,
            qdisc_detach_program,
        },
    },
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netdrop_common::{
    DropCounters, EgressSample, MAX_UNDERLAYS, OBS_SLOTS, ObsConfig, ObsCounters, PeerCache,
    direction, obs_stat, role,
};

use super::CaptureError;
use crate::netns::{Netns, ip_json};

/// Which devices to observe; `None` = find it (flannel.1, cni0, and the
/// VXLAN device's underlay or the default route's device).
#[derive(Clone, Debug, Default)]
pub struct ObserverOptions {
    pub overlay: Option<String>,
    pub bridge: Option<String>,
    pub underlay: Option<String>,
    pub pod_cidrs: Vec<IpNet>,
    pub vxlan_port: u16,
    /// Un-NATed egress samples per second (whole node).
    pub sample_rate: u32,
    pub tc_attach: TcAttach,
}

/// How the observers attach to a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TcAttach {
    /// tcx links, or netlink filters where the kernel has no tcx (< 6.6).
    #[default]
    Auto,
    /// tcx links only (kernel ≥ 6.6): gone with the process, even after SIGKILL.
    Tcx,
    /// `clsact` filters through netlink (kernels < 6.6). Removed on exit;
    /// after a SIGKILL they stay until the next netdrop start removes them.
    Netlink,
}

/// The devices found for each role (name, ifindex).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedIfaces {
    pub overlay: Option<(String, u32)>,
    pub bridge: Option<(String, u32)>,
    /// The VXLAN device's lower device (else the first default route's).
    pub underlay: Option<(String, u32)>,
    /// Every other device holding a default route (IPv4 or IPv6): pod
    /// egress to the world can leave by them (at most
    /// [`MAX_UNDERLAYS`]` - 1`).
    pub more_underlays: Vec<(String, u32)>,
    /// The underlay's IPv4 network: the node network.
    pub node_net: Option<Ipv4Net>,
    /// The underlay's global IPv6 network, on dual-stack nodes.
    pub node_net6: Option<Ipv6Net>,
}

impl ObservedIfaces {
    /// Each device found with its slot ([`OBS_SLOTS`]): overlay, bridge,
    /// the underlay, then the other default-route devices.
    pub fn slots(&self) -> impl Iterator<Item = (u32, &(String, u32))> {
        let fixed = [
            (role::OVERLAY, self.overlay.as_ref()),
            (role::BRIDGE, self.bridge.as_ref()),
            (role::UNDERLAY, self.underlay.as_ref()),
        ];
        fixed.into_iter().filter_map(|(s, d)| Some((s, d?))).chain(
            self.more_underlays
                .iter()
                .take(MAX_UNDERLAYS as usize - 1)
                .enumerate()
                .map(|(i, d)| (role::UNDERLAY + 1 + i as u32, d)),
        )
    }

    /// The device names observed, in slot order.
    pub fn names(&self) -> Vec<String> {
        self.slots().map(|(_, (n, _))| n.clone()).collect()
    }

    /// The name of the observed device `ifindex`.
    pub fn name_of(&self, ifindex: u32) -> Option<&str> {
        self.slots()
            .find(|(_, (_, i))| *i == ifindex)
            .map(|(_, (n, _))| n.as_str())
    }
}

/// A slot's role ([`role`]).
pub fn role_of_slot(slot: u32) -> u32 {
    slot.min(role::UNDERLAY)
}

pub fn role_name(r: u32) -> &'static str {
    match r {
        role::OVERLAY => "overlay",
        role::BRIDGE => "bridge",
        _ => "underlay",
    }
}

pub struct NodeObservers {
    /// First: fields drop in order, and filters go before their programs.
    netlink: NetlinkLinks,
    ebpf: Ebpf,
    samples: RingBuf<MapData>,
    pub ifaces: ObservedIfaces,
    tc_attach: TcAttach,
    /// The (device, ingress?) hooks the observers attached to: a device
    /// they could not attach to is not counted (not even as zero).
    attached: Vec<(String, bool)>,
}

/// Finds the node's devices in its namespace; also says which of them are
/// missing (one line each).
pub fn discover(
    node: &Netns,
    opts: &ObserverOptions,
) -> Result<(ObservedIfaces, Vec<String>), CaptureError> {
    let names = node
        .interfaces()
        .map_err(|e| CaptureError::Observer(e.to_string()))?;
    let index = |name: &str| {
        names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(i, n)| (n.clone(), *i))
    };
    let ns = node.name.as_deref();
    let overlay_name = opts.overlay.clone().unwrap_or_else(|| "flannel.1".into());
    let overlay = index(&overlay_name);
    let bridge = index(opts.bridge.as_deref().unwrap_or("cni0"));

    // Every device a default route leaves by (multipath routes too).
    let mut defaults: Vec<String> = Vec::new();
    for family in ["-4", "-6"] {
        for route in ip_json(ns, &[family, "route", "show", "default"])
            .as_ref()
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let hops = route["nexthops"].as_array().cloned().unwrap_or_default();
            for dev in std::iter::once(&route["dev"])
                .chain(hops.iter().map(|h| &h["dev"]))
                .filter_map(|d| d.as_str())
            {
                if !defaults.iter().any(|d| d == dev) {
                    defaults.push(dev.to_owned());
                }
            }
        }
    }
    let underlay_name = opts.underlay.clone().or_else(|| {
        // The VXLAN device's lower device, else the default route's device.
        let link = ip_json(ns, &["-d", "link", "show", &overlay_name]).and_then(|v| {
            v[0]["linkinfo"]["info_data"]["link"]
                .as_str()
                .map(str::to_owned)
        });
        link.or_else(|| defaults.first().cloned())
    });
    let underlay = underlay_name.as_deref().and_then(index);
    let bridge_name = opts.bridge.as_deref().unwrap_or("cni0");
    let more_underlays: Vec<(String, u32)> = defaults
        .iter()
        .filter(|d| {
            [
                Some(overlay_name.as_str()),
                Some(bridge_name),
                underlay_name.as_deref(),
            ]
            .iter()
            .all(|n| *n != Some(d.as_str()))
        })
        .filter_map(|d| index(d))
        .collect();
    if more_underlays.len() >= MAX_UNDERLAYS as usize {
        log::warn!(
            "{}: default routes leave by {} devices; observing the first {} ({})",
            node.label(),
            more_underlays.len() + 1,
            MAX_UNDERLAYS,
            more_underlays[MAX_UNDERLAYS as usize - 1..]
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
                + " not observed"
        );
    }
    // The underlay's first address of each family, as a network.
    let node_network = |family: &str| -> Option<IpNet> {
        let (name, _) = underlay.as_ref()?;
        let v = ip_json(
            ns,
            &[family, "addr", "show", "dev", name, "scope", "global"],
        )?;
        let a = &v[0]["addr_info"][0];
        let ip: std::net::IpAddr = a["local"].as_str()?.parse().ok()?;
        IpNet::new(ip, u8::try_from(a["prefixlen"].as_u64()?).ok()?)
            .ok()
            .map(|n| n.trunc())
    };
    let node_net = match node_network("-4") {
        Some(IpNet::V4(n)) => Some(n),
        _ => None,
    };
    let node_net6 = match node_network("-6") {
        Some(IpNet::V6(n)) => Some(n),
        _ => None,
    };
    let missing = [
        ("overlay", Some(overlay_name.as_str()), overlay.is_none()),
        ("bridge", Some(bridge_name), bridge.is_none()),
        ("underlay", underlay_name.as_deref(), underlay.is_none()),
    ]
    .into_iter()
    .filter(|(_, _, missing)| *missing)
    .map(|(what, want, _)| {
        format!(
            "{}: no {what} device {} to observe",
            node.label(),
            want.unwrap_or("(none found)")
        )
    })
    .collect();
    let found = ObservedIfaces {
        overlay,
        bridge,
        underlay,
        more_underlays,
        node_net,
        node_net6,
    };
    Ok((found, missing))
}

/// Kernels before 6.6 have no tcx, and this one cannot be made to refuse
/// it: with the `lab` feature, `NETDROP_LAB_REFUSE_TCX` makes every tcx
/// attach fail as theirs do, so the netlink fallback is tested here.
fn refuse_tcx() -> bool {
    cfg!(feature = "lab") && std::env::var_os("NETDROP_LAB_REFUSE_TCX").is_some()
}

/// Attaches one observer program: a tcx link (left with the program, which
/// detaches it), or a netlink filter (returned, to be detached in its own
/// namespace: netlink names devices by ifindex in the caller's).
fn attach_one(
    prog: &mut SchedClassifier,
    name: &str,
    iface: &str,
    kind: TcAttachType,
    mode: TcAttach,
) -> Result<Option<SchedClassifierLink>, String> {
    if mode != TcAttach::Netlink {
        let tcx = if refuse_tcx() {
            Err("tcx refused (NETDROP_LAB_REFUSE_TCX: as on a kernel before 6.6)".to_owned())
        } else {
            prog.attach_with_options(iface, kind, TcAttachOptions::TcxOrder(LinkOrder::default()))
                .map_err(|e| e.to_string())
        };
        match (tcx, mode) {
            (Ok(_), _) => return Ok(None),
            (Err(e), TcAttach::Tcx) => return Err(e),
            (Err(e), _) => log::info!("{iface}: no tcx ({e}); attaching through netlink"),
        }
    }
    // A filter of ours left by a netdrop that was SIGKILLed (netlink
    // filters outlive their process, unlike tcx links).
    if qdisc_detach_program(iface, kind, name).is_ok() {
        log::warn!("{iface}: removed a {name} filter left by an earlier netdrop");
    }
    // The qdisc that holds TC filters. An empty clsact changes nothing for
    // packets, so it stays after netdrop's filters are gone.
    if let Err(e) = qdisc_add_clsact(iface) {
        let exists =
            matches!(&e, TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
        if !exists {
            return Err(format!("adding the clsact qdisc: {e}"));
        }
    }
    let id = prog
        .attach_with_options(iface, kind, TcAttachOptions::Netlink(NlOptions::default()))
        .map_err(|e| e.to_string())?;
    prog.take_link(id).map(Some).map_err(|e| e.to_string())
}

/// Netlink filters of one node, detached in the node's namespace on drop.
#[derive(Default)]
struct NetlinkLinks {
    links: Vec<SchedClassifierLink>,
    netns: Option<Netns>,
}

impl Drop for NetlinkLinks {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        if links.is_empty() {
            return;
        }
        // Dropping a link detaches it.
        if let Some(netns) = &self.netns
            && let Err(e) = netns.run_in(move || drop(links))
        {
            if netns.path.exists() {
                log::warn!("cannot detach the TC filters in {}: {e}", netns.label());
            } else {
                // The namespace went: its devices, filters with them, go
                // when nothing holds it any more.
                log::debug!("TC filters of {} left to its removal: {e}", netns.label());
            }
        }
    }
}

impl NodeObservers {
    /// Finds the node's devices and attaches to them.
    pub fn attach(node: &Netns, opts: &ObserverOptions) -> Result<Self, CaptureError> {
        let (ifaces, missing) = discover(node, opts)?;
        for m in missing {
            log::warn!("{m}");
        }
        Self::attach_found(node, ifaces, opts)
    }

    /// Attaches to devices already found.
    pub fn attach_found(
        node: &Netns,
        ifaces: ObservedIfaces,
        opts: &ObserverOptions,
    ) -> Result<Self, CaptureError> {
        let mut obs = Self::load(ifaces, opts)?;
        obs.attach_in(node)?;
        Ok(obs)
    }

    /// Loads the programs for these devices without attaching them
    /// (`BPF_PROG_TEST_RUN` tests use this).
    /// Kernel time and runs of the observer programs.
    /// Whether the observer of `iface`'s ingress (or egress) is attached.
    pub fn attached(&self, iface: &str, ingress: bool) -> bool {
        self.attached
            .iter()
            .any(|(i, d)| i == iface && *d == ingress)
    }

    pub fn program_stats(&self) -> Vec<super::ProgramStats> {
        super::program_stats(&self.ebpf)
    }

    pub fn load(ifaces: ObservedIfaces, opts: &ObserverOptions) -> Result<Self, CaptureError> {
        let cpus = aya::util::nr_cpus().map(|n| n.max(1) as u32).unwrap_or(1);
        let rate = opts.sample_rate.div_ceil(cpus).max(1);
        let (node_net, node_mask) = match ifaces.node_net {
            Some(n) => (
                u32::from_ne_bytes(n.network().octets()),
                u32::from_ne_bytes(n.netmask().octets()),
            ),
            // Unknown node network: every non-pod destination counts as the world.
            None => (0, u32::MAX),
        };
        // Unknown: only `::` is "the node", every other non-pod address the world.
        let node_net6 = ifaces.node_net6.map_or([0, 0, u64::MAX, u64::MAX], |n| {
            let (n0, n1) = super::v6_halves(n.network());
            let (m0, m1) = super::v6_halves(n.netmask());
            [n0, n1, m0, m1]
        });
        let mut ifindex = [0; OBS_SLOTS as usize];
        for (slot, (_, i)) in ifaces.slots() {
            ifindex[slot as usize] = *i;
        }
        let config = ObsConfig {
            ifindex,
            node_net,
            node_mask,
            vxlan_port: opts.vxlan_port,
            _pad: 0,
            sample_rate: rate,
            sample_burst: rate.max(10),
            _pad2: 0,
            node_net6,
            pod_cidrs: super::pod_cidrs(&opts.pod_cidrs)?,
        };
        // TC programs need no kernel BTF (offsets are the packet's own):
        // without `.btf(None)` the loader would parse vmlinux's BTF, tens
        // of MiB, on every attach, and observers re-attach whenever a
        // node's devices change.
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .override_global("OBS_CONFIG", &config, true)
            .load(crate::OBSERVE_OBJECT)?;
        for name in ["netdrop_tc_ingress", "netdrop_tc_egress"] {
            let prog: &mut SchedClassifier = super::program(&mut ebpf, name)?;
            prog.load().map_err(|source| CaptureError::Program {
                what: format!("loading {name}"),
                source,
            })?;
        }
        let samples = ebpf
            .take_map("EGRESS_SAMPLES")
            .ok_or_else(|| CaptureError::Observer("object has no EGRESS_SAMPLES map".into()))?;
        let samples = RingBuf::try_from(samples).map_err(|source| CaptureError::Map {
            map: "EGRESS_SAMPLES",
            source,
        })?;
        Ok(Self {
            ebpf,
            samples,
            ifaces,
            tc_attach: opts.tc_attach,
            netlink: NetlinkLinks::default(),
            attached: Vec::new(),
        })
    }

    /// Runs a program on a crafted frame as if it passed device `ifindex`;
    /// returns the program's verdict (tests).
    #[cfg(feature = "lab")]
    pub fn test_run(&self, egress: bool, ifindex: u32, frame: &[u8]) -> Result<i32, CaptureError> {
        use aya::programs::{TestRun, TestRunOptions};
        let name = if egress {
            "netdrop_tc_egress"
        } else {
            "netdrop_tc_ingress"
        };
        let prog: &SchedClassifier = self
            .ebpf
            .program(name)
            .ok_or_else(|| CaptureError::Observer(format!("no program {name}")))?
            .try_into()
            .map_err(|source| CaptureError::Program {
                what: name.into(),
                source,
            })?;
        // A whole struct __sk_buff (192 bytes; the kernel refused a shorter
        // one here) with only `ifindex` (offset 40) set: the device the
        // kernel pretends the frame is on.
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 64];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..Default::default()
            })
            .map_err(|source| CaptureError::Program {
                what: format!("test run of {name}"),
                source,
            })?;
        Ok(r.return_value as i32)
    }

    fn attach_in(&mut self, node: &Netns) -> Result<(), CaptureError> {
        let ifaces = &self.ifaces;
        let ebpf = &mut self.ebpf;
        let targets = ifaces.names();
        let mode = self.tc_attach;
        type Attached = (Vec<SchedClassifierLink>, Vec<(String, bool)>);
        let attach_all = || -> Result<Attached, CaptureError> {
            let mut netlink = Vec::new();
            let mut attached = Vec::new();
            for iface in &targets {
                for (name, kind) in [
                    ("netdrop_tc_ingress", TcAttachType::Ingress),
                    ("netdrop_tc_egress", TcAttachType::Egress),
                ] {
                    let prog: &mut SchedClassifier = super::program(ebpf, name)?;
                    match attach_one(prog, name, iface, kind, mode) {
                        Ok(link) => {
                            netlink.extend(link);
                            attached.push((iface.clone(), kind == TcAttachType::Ingress));
                        }
                        // A device that vanished is a warning, not a failure.
                        Err(e) => {
                            log::warn!("{}: cannot observe {iface} ({kind:?}): {e}", node.label())
                        }
                    }
                }
            }
            Ok((netlink, attached))
        };
        // Devices are named in the caller's namespace: attach from a thread
        // that entered the node's.
        let (links, attached) = node
            .run_in(attach_all)
            .map_err(|e| CaptureError::Observer(e.to_string()))??;
        self.attached = attached;
        self.netlink = NetlinkLinks {
            links,
            netns: Some(node.clone()),
        };
        Ok(())
    }

    /// Counters per (slot, direction), summed over CPUs (slots:
    /// [`ObservedIfaces::slots`]).
    pub fn counters(&self) -> Result<[[ObsCounters; 2]; OBS_SLOTS as usize], CaptureError> {
        let map = self
            .ebpf
            .map("OBS_COUNTERS")
            .ok_or_else(|| CaptureError::Observer("no OBS_COUNTERS".into()))?;
        let arr: PerCpuArray<&MapData, ObsCounters> =
            PerCpuArray::try_from(map).map_err(|source| CaptureError::Map {
                map: "OBS_COUNTERS",
                source,
            })?;
        let mut out = [[ObsCounters::default(); 2]; OBS_SLOTS as usize];
        for r in 0..OBS_SLOTS {
            for d in [direction::INGRESS, direction::EGRESS] {
                let v = arr
                    .get(&(r * 2 + d), 0)
                    .map_err(|source| CaptureError::Map {
                        map: "OBS_COUNTERS",
                        source,
                    })?;
                let slot = &mut out[r as usize][d as usize];
                for c in v.iter() {
                    slot.pod_packets += c.pod_packets;
                    slot.pod_bytes += c.pod_bytes;
                    slot.vxlan_packets += c.vxlan_packets;
                    slot.vxlan_bytes += c.vxlan_bytes;
                    slot.unnat_packets += c.unnat_packets;
                    slot.unnat_bytes += c.unnat_bytes;
                }
            }
        }
        Ok(out)
    }

    /// The observers' own losses (`obs_stat::*`), summed over CPUs.
    pub fn stats(&self) -> Result<[u64; obs_stat::COUNT as usize], CaptureError> {
        super::summed_counters(&self.ebpf, "OBS_STATS")
    }

    /// VXLAN packets per peer node and direction.
    pub fn peers(&self) -> Result<Vec<(std::net::IpAddr, u32, DropCounters)>, CaptureError> {
        let sums =
            super::cached_counts::<PeerCache>(&self.ebpf, "VXLAN_PEER_CACHE", "VXLAN_PEERS")?;
        Ok(sums
            .into_iter()
            .map(|(k, sum)| {
                let mut bytes = [0u8; 16];
                for (chunk, w) in bytes.chunks_exact_mut(4).zip(k.peer) {
                    chunk.copy_from_slice(&w.to_ne_bytes());
                }
                let peer = if k.family == 6 {
                    std::net::IpAddr::from(bytes)
                } else {
                    std::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
                };
                (peer, k.direction, sum)
            })
            .collect())
    }

    /// Un-NATed egress samples since the last call.
    pub fn egress_samples(&mut self) -> Vec<EgressSample> {
        super::drain(&mut self.samples)
    }
}
