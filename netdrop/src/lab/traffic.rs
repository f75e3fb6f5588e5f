//! Traffic senders that run inside a namespace (setns on a thread), so tests
//! and benchmarks can send exactly N packets without external tools.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;

use crate::netns::Netns;

/// Sends `count` UDP datagrams of `payload` bytes from namespace `ns` to `dst`.
pub fn send_udp(ns: &str, dst: SocketAddr, count: u64, payload: usize) -> anyhow::Result<()> {
    let any: SocketAddr = if dst.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    send_udp_from(ns, any, dst, count, payload)
}

/// Like [`send_udp`], from source address `from` (one of `ns`'s own).
pub fn send_udp_from(
    ns: &str,
    from: SocketAddr,
    dst: SocketAddr,
    count: u64,
    payload: usize,
) -> anyhow::Result<()> {
    let ns = Netns::named(ns)?;
    ns.run_in(move || -> anyhow::Result<()> {
        let sock = UdpSocket::bind(from).with_context(|| format!("binding UDP to {from}"))?;
        let buf = vec![0x6eu8; payload];
        for _ in 0..count {
            match sock.send_to(&buf, dst) {
                // A local netfilter DROP (OUTPUT, POSTROUTING) shows as EPERM:
                // the packet was sent into the stack and dropped there.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                r => {
                    r.with_context(|| format!("sending UDP to {dst}"))?;
                }
            }
        }
        Ok(())
    })?
}

/// Floods UDP from `ns` to `dst` for `dur`; returns datagrams sent.
pub fn flood_udp(ns: &str, dst: SocketAddr, dur: Duration, payload: usize) -> anyhow::Result<u64> {
    let ns = Netns::named(ns)?;
    ns.run_in(move || -> anyhow::Result<u64> {
        let sock = UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
        sock.connect(dst)?;
        let buf = vec![0x6eu8; payload];
        let end = std::time::Instant::now() + dur;
        let mut sent = 0u64;
        while std::time::Instant::now() < end {
            for _ in 0..256 {
                if sock.send(&buf).is_ok() {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    })?
}

/// One TCP connect attempt from `ns` to `dst`; true if it connected.
pub fn tcp_connect(ns: &str, dst: SocketAddr, timeout: Duration) -> anyhow::Result<bool> {
    let ns = Netns::named(ns)?;
    Ok(ns.run_in(move || TcpStream::connect_timeout(&dst, timeout).is_ok())?)
}

/// Sends `count` bare TCP ACKs (no handshake before them, checksum left
/// zero) from `ns` to `dst` through a raw socket: conntrack on the way
/// classes them INVALID, like the stray segments of a flow it lost.
pub fn send_stray_tcp_acks(
    ns: &str,
    dst: std::net::SocketAddrV4,
    count: u64,
) -> anyhow::Result<()> {
    let mut seg = [0u8; 20];
    seg[0..2].copy_from_slice(&40000u16.to_be_bytes());
    seg[2..4].copy_from_slice(&dst.port().to_be_bytes());
    seg[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
    seg[8..12].copy_from_slice(&1u32.to_be_bytes()); // ack
    seg[12] = 5 << 4; // data offset: 5 words
    seg[13] = 0x10; // ACK
    seg[14..16].copy_from_slice(&65535u16.to_be_bytes()); // window
    let ns = Netns::named(ns)?;
    ns.run_in(move || -> anyhow::Result<()> {
        let fd = raw_socket(libc::IPPROTO_TCP)?;
        for _ in 0..count {
            raw_send(&fd, &seg, *dst.ip())?;
        }
        Ok(())
    })?
}

/// One IPv4 packet to `dst` of each IP protocol number in `protos` (an
/// 8-byte payload; the kernel writes the IP header): a drop site per
/// protocol, as many as a test needs.
pub fn send_ip_protocols(
    ns: &str,
    dst: std::net::Ipv4Addr,
    protos: std::ops::RangeInclusive<u8>,
) -> anyhow::Result<()> {
    let ns = Netns::named(ns)?;
    ns.run_in(move || -> anyhow::Result<()> {
        for proto in protos {
            let fd = raw_socket(i32::from(proto))?;
            raw_send(&fd, &[0u8; 8], dst)?;
        }
        Ok(())
    })?
}

/// A raw IPv4 socket of protocol `proto`, owned.
fn raw_socket(proto: i32) -> anyhow::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned (and closed) by the caller.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("opening a raw socket of protocol {proto}"));
    }
    // SAFETY: fd is a fresh, valid descriptor.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// `payload` sent to `dst` on raw socket `fd`.
fn raw_send(
    fd: &std::os::fd::OwnedFd,
    payload: &[u8],
    dst: std::net::Ipv4Addr,
) -> anyhow::Result<()> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: valid buffer and sockaddr of the sizes given.
    let n = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("sending a raw packet");
    }
    Ok(())
}
