//! The nf_tables tables of a namespace, listed straight from the kernel
//! (one `NFT_MSG_GETTABLE` dump over netlink). `nft list tables` builds
//! nft's whole cache first: 28 s on a node whose iptables-nft holds a
//! 10k-Service kube-proxy ruleset, where this takes milliseconds.

use std::io;

use crate::netns::Netns;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// nftables' name of a netfilter protocol family.
fn family_name(f: u8) -> Option<&'static str> {
    Some(match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => return None,
    })
}

/// (family, name) of every table in namespace `netns` (netdrop's own for
/// `None`).
pub fn tables(netns: Option<&str>) -> io::Result<Vec<(String, String)>> {
    match netns {
        Some(name) => Netns::named(name)
            .map_err(io::Error::other)?
            .run_in(dump_tables)
            .map_err(io::Error::other)?,
        None => dump_tables(),
    }
}

fn dump_tables() -> io::Result<Vec<(String, String)>> {
    // SAFETY: plain socket(2); the descriptor is closed by `Fd`'s drop.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = Fd(fd);
    // nlmsghdr + nfgenmsg { family AF_UNSPEC, version 0, res_id 0 }
    let mut req = [0u8; NLMSG_HDRLEN + 4];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE).to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: `req` is a valid buffer of `req.len()` bytes.
    let sent = unsafe { libc::send(fd.0, req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut msgs = &buf[..n as usize];
        if msgs.is_empty() {
            return Ok(out);
        }
        while msgs.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes(msgs[4..6].try_into().unwrap_or_default());
            if len < NLMSG_HDRLEN || len > msgs.len() {
                return Err(io::Error::other("truncated netlink message"));
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = msgs
                        .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                        .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))
                        .unwrap_or(0);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
                _ => {
                    let body = &msgs[NLMSG_HDRLEN..len];
                    if let (Some(&family), Some(attrs)) = (body.first(), body.get(4..))
                        && let (Some(fam), Some(name)) = (family_name(family), table_name(attrs))
                    {
                        out.push((fam.to_owned(), name));
                    }
                }
            }
            let step = (len + 3) & !3;
            msgs = msgs.get(step..).unwrap_or(&[]);
        }
    }
}

/// `NFTA_TABLE_NAME` among a message's attributes.
fn table_name(mut attrs: &[u8]) -> Option<String> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes(attrs[0..2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(attrs[2..4].try_into().ok()?) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NFTA_TABLE_NAME {
            let v = &attrs[4..len];
            let v = v.split(|&b| b == 0).next().unwrap_or(v);
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}
