//! What netdrop needs from the running kernel's BTF: struct member offsets
//! (Rust eBPF has no CO-RE) and the names of `enum skb_drop_reason`.

use std::{collections::BTreeMap, path::Path};

use btf_rs::{Btf, BtfType, Type};
use netdrop_common::{KernelLayout, NO_BRIDGE_NF};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "this kernel exposes no BTF at {0} (netdrop needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Missing(String),
    #[error("cannot parse kernel BTF at {path}: {msg}")]
    Parse { path: String, msg: String },
    #[error("kernel BTF has no {0}")]
    NoType(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

/// The kernel's BTF, parsed once at start-up.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing(path.display().to_string()));
        }
        let btf = Btf::from_file(path).map_err(|e| BtfError::Parse {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Ok(Self { btf })
    }

    fn strukt(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoType(format!("struct {name}")))?;
        types
            .into_iter()
            .find_map(|t| match t {
                // Skip forward declarations and empty duplicates.
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoType(format!("struct {name}")))
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous
    /// unions and structs (e.g. `sk_buff._skb_refdst` lives in one).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let s = self.strukt(strukt)?;
        self.find_member(&s, member, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })
    }

    fn find_member(&self, s: &btf_rs::Struct, member: &str, base_bits: u32) -> Option<u32> {
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let at = base_bits + m.bit_offset();
            if name == member {
                return Some(at);
            }
            if name.is_empty() {
                let inner = m
                    .get_type_id()
                    .and_then(|id| self.btf.resolve_type_by_id(id).ok());
                if let Some(Type::Struct(inner) | Type::Union(inner)) = inner
                    && let Some(found) = self.find_member(&inner, member, at)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Values and names of an enum, with a common prefix stripped
    /// (`SKB_DROP_REASON_NETFILTER_DROP` → `NETFILTER_DROP`).
    pub fn enum_values(&self, name: &str, strip: &str) -> Result<BTreeMap<u32, String>, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoType(format!("enum {name}")))?;
        let e = types
            .into_iter()
            .find_map(|t| match t {
                Type::Enum(e) => Some(e),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoType(format!("enum {name}")))?;
        let mut out = BTreeMap::new();
        for m in &e.members {
            let n = self.btf.resolve_name(m).unwrap_or_default();
            out.insert(m.val(), n.strip_prefix(strip).unwrap_or(&n).to_owned());
        }
        Ok(out)
    }

    /// The BTF id of `bpf_rdonly_cast` when this kernel also casts to
    /// `void` (`BPF_FEAT_RDONLY_CAST_TO_VOID`): what `read::Cast` needs.
    pub fn rdonly_cast_to_void(&self) -> Option<u32> {
        let feature = self
            .enum_values("bpf_features", "BPF_FEAT_")
            .ok()?
            .into_values()
            .any(|n| n == "RDONLY_CAST_TO_VOID");
        if !feature {
            return None;
        }
        self.btf
            .resolve_ids_by_name("bpf_rdonly_cast")
            .ok()?
            .into_iter()
            .find(|id| matches!(self.btf.resolve_type_by_id(*id), Ok(Type::Func(_))))
    }

    /// The struct offsets the drop program reads. Symbol addresses are filled
    /// in from kallsyms by the caller.
    pub fn kernel_layout(&self) -> Result<KernelLayout, BtfError> {
        // `possible_net_t` is a one-member struct: its pointer sits at offset 0.
        let ns_inum = self.member_offset("net", "ns")? + self.member_offset("ns_common", "inum")?;
        Ok(KernelLayout {
            skb_dev: self.member_offset("sk_buff", "dev")?,
            skb_refdst: self.member_offset("sk_buff", "_skb_refdst")?,
            skb_len: self.member_offset("sk_buff", "len")?,
            skb_mark: self.member_offset("sk_buff", "mark")?,
            skb_head: self.member_offset("sk_buff", "head")?,
            skb_network_header: self.member_offset("sk_buff", "network_header")?,
            dev_ifindex: self.member_offset("net_device", "ifindex")?,
            dev_nd_net: self.member_offset("net_device", "nd_net")?,
            net_ns_inum: ns_inum,
            dst_dev: self.member_offset("dst_entry", "dev")?,
            dst_input: self.member_offset("dst_entry", "input")?,
            skb_iif: self.member_offset("sk_buff", "skb_iif")?,
            ..self.bridge_nf_layout().unwrap_or(KernelLayout {
                skb_ext_bridge_nf: NO_BRIDGE_NF,
                ..KernelLayout::default()
            })
        })
    }

    /// Where br_netfilter keeps a bridged packet's ports; `None` on kernels
    /// built without it (then bridged drops are not told apart).
    fn bridge_nf_layout(&self) -> Option<KernelLayout> {
        let bit = self
            .enum_values("skb_ext_id", "SKB_EXT_")
            .ok()?
            .into_iter()
            .find_map(|(v, n)| (n == "BRIDGE_NF").then_some(v))
            .filter(|v| *v < NO_BRIDGE_NF)?;
        Some(KernelLayout {
            skb_active_extensions: self.member_offset("sk_buff", "active_extensions").ok()?,
            skb_extensions: self.member_offset("sk_buff", "extensions").ok()?,
            skb_ext_offset: self.member_offset("skb_ext", "offset").ok()?,
            skb_ext_bridge_nf: bit,
            nf_bridge_physinif: self.member_offset("nf_bridge_info", "physinif").ok()?,
            nf_bridge_physoutdev: self.member_offset("nf_bridge_info", "physoutdev").ok()?,
            ..KernelLayout::default()
        })
    }
}
