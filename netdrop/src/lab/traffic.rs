//! Traffic senders that run inside a namespace (setns on a thread), so tests
//! and benchmarks can send exactly N packets without external tools.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;

use crate::decode::netns::Netns;

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
