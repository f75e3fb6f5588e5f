//! iptables-legacy's tables as the kernel holds them (x_tables), read with
//! `getsockopt` on raw sockets kept in the node's namespace: what tells
//! whether they changed, cheaply. x_tables has no generation, so two checks
//! stand in for one: each table's entry count and size (`*_SO_GET_INFO`, a
//! few bytes: most changes move them), and a hash of its entries without
//! their counters (`*_SO_GET_ENTRIES`, the table itself: any change moves
//! it). Nothing here changes a table.

use std::{
    fs::File,
    hash::{Hash, Hasher},
    io::{self, Read, Seek},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `IPT_SO_GET_INFO` / `IP6T_SO_GET_INFO` (same numbers).
const SO_GET_INFO: libc::c_int = 64;
/// `IPT_SO_GET_ENTRIES` / `IP6T_SO_GET_ENTRIES`.
const SO_GET_ENTRIES: libc::c_int = 65;
const TABLE_MAXNAMELEN: usize = 32;
/// `struct ipt_getinfo`: name, valid_hooks, hook_entry[5], underflow[5],
/// num_entries, size.
const GETINFO_LEN: usize = TABLE_MAXNAMELEN + 4 + 20 + 20 + 4 + 4;
/// `struct ipt_get_entries` before its entries (name, size, padded to the
/// entries' 8-byte alignment).
const GET_ENTRIES_HDR: usize = 40;

/// One family's x_tables, as this module reads them.
struct Family {
    /// `SOL_IP` or `SOL_IPV6`.
    level: libc::c_int,
    /// Where an entry keeps `next_offset`, `comefrom` and its `struct
    /// xt_counters`: `ipt_entry` after the 84-byte `ipt_ip` and nfcache,
    /// target_offset; `ip6t_entry` after the 136-byte `ip6t_ip6`, its
    /// counters 8-byte aligned.
    layout: EntryLayout,
    /// A raw socket of the namespace (`getsockopt` answers for the
    /// namespace the socket was made in).
    sock: OwnedFd,
    /// `ip_tables_names` / `ip6_tables_names` of the namespace.
    names: File,
}

#[derive(Clone, Copy)]
struct EntryLayout {
    next_offset: usize,
    comefrom: usize,
    counters: usize,
}

const IPT_ENTRY: EntryLayout = EntryLayout {
    next_offset: 90,
    comefrom: 92,
    counters: 96,
};
const IP6T_ENTRY: EntryLayout = EntryLayout {
    next_offset: 142,
    comefrom: 144,
    counters: 152,
};

/// The legacy tables of one namespace. Open it inside the namespace.
pub struct LegacyTables {
    families: Vec<Family>,
}

impl LegacyTables {
    /// Opens what exists in the calling thread's namespace: a family whose
    /// module is not loaded (no names file) is skipped; it is seen when a
    /// later `open` finds it.
    pub fn open_here() -> Self {
        let mut families = Vec::new();
        for (names, domain, level, layout) in [
            ("ip_tables_names", libc::AF_INET, libc::SOL_IP, IPT_ENTRY),
            (
                "ip6_tables_names",
                libc::AF_INET6,
                libc::SOL_IPV6,
                IP6T_ENTRY,
            ),
        ] {
            // This thread's namespace's (not the process's: /proc/net is).
            let Ok(names) = File::open(format!("/proc/thread-self/net/{names}")) else {
                continue;
            };
            // SAFETY: plain socket(2); the descriptor is owned below.
            let fd = unsafe {
                libc::socket(
                    domain,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_RAW,
                )
            };
            if fd < 0 {
                continue;
            }
            // SAFETY: `fd` is a new descriptor nothing else owns.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            families.push(Family {
                level,
                layout,
                sock,
                names,
            });
        }
        Self { families }
    }

    /// A hash of each table's name, entry count and size: cheap (a few
    /// bytes a table), moved by most changes (a rule added or removed, a
    /// chain made), not by counters. `None` when no legacy table exists.
    pub fn shape(&self) -> io::Result<Option<u64>> {
        let mut h = std::hash::DefaultHasher::new();
        let mut any = false;
        for f in &self.families {
            for name in table_names(f)? {
                any = true;
                name.hash(&mut h);
                let info = get_info(f, &name)?;
                info[GETINFO_LEN - 8..].hash(&mut h);
            }
        }
        Ok(any.then(|| h.finish()))
    }

    /// A hash of the entries without their counters of the tables
    /// smaller than [`LARGE_TABLE`] (`large`: of the larger ones): moved by
    /// any change of their rules (a rule replaced by one of the same size
    /// too, as kube-proxy's endpoint chains are when a pod is replaced),
    /// not by packets. Costs a copy of those tables: a 10k-Service `nat`
    /// table is 65 MB and a fifth of a second, so the caller asks for large
    /// tables less often.
    pub fn content(&self, large: bool) -> io::Result<u64> {
        let mut h = std::hash::DefaultHasher::new();
        for f in &self.families {
            for name in table_names(f)? {
                let size = table_size(&get_info(f, &name)?);
                if (size > LARGE_TABLE) != large {
                    continue;
                }
                name.hash(&mut h);
                let mut entries = get_entries(f, &name)?;
                zero_counters(&mut entries, f.layout);
                entries.hash(&mut h);
            }
        }
        Ok(h.finish())
    }
}

/// Tables above this many bytes of entries have their content compared
/// apart (and less often).
pub const LARGE_TABLE: usize = 8 << 20;

/// `size` of a `struct ipt_getinfo`.
fn table_size(info: &[u8; GETINFO_LEN]) -> usize {
    let mut b = [0u8; 4];
    b.copy_from_slice(&info[GETINFO_LEN - 4..]);
    u32::from_ne_bytes(b) as usize
}

fn table_names(f: &Family) -> io::Result<Vec<String>> {
    let mut names = &f.names;
    names.rewind()?;
    let mut s = String::new();
    names.read_to_string(&mut s)?;
    let mut v: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
    v.sort();
    Ok(v)
}

fn name_field(name: &str) -> io::Result<[u8; TABLE_MAXNAMELEN]> {
    let mut field = [0u8; TABLE_MAXNAMELEN];
    if name.len() >= TABLE_MAXNAMELEN {
        return Err(io::Error::other(format!("table name too long: {name}")));
    }
    field[..name.len()].copy_from_slice(name.as_bytes());
    Ok(field)
}

fn getsockopt(f: &Family, opt: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is a valid, writable buffer of `len` bytes; the kernel
    // writes at most `len` and says how many.
    let r = unsafe {
        libc::getsockopt(
            f.sock.as_raw_fd(),
            f.level,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

fn get_info(f: &Family, name: &str) -> io::Result<[u8; GETINFO_LEN]> {
    let mut info = [0u8; GETINFO_LEN];
    info[..TABLE_MAXNAMELEN].copy_from_slice(&name_field(name)?);
    getsockopt(f, SO_GET_INFO, &mut info)?;
    Ok(info)
}

/// The entries of table `name`. The table may be replaced between asking
/// its size and its entries (the kernel then refuses the size): asked again.
fn get_entries(f: &Family, name: &str) -> io::Result<Vec<u8>> {
    for _ in 0..5 {
        let size = table_size(&get_info(f, name)?);
        let mut buf = vec![0u8; GET_ENTRIES_HDR + size];
        buf[..TABLE_MAXNAMELEN].copy_from_slice(&name_field(name)?);
        buf[TABLE_MAXNAMELEN..TABLE_MAXNAMELEN + 4].copy_from_slice(&(size as u32).to_ne_bytes());
        match getsockopt(f, SO_GET_ENTRIES, &mut buf) {
            Ok(_) => {
                buf.drain(..GET_ENTRIES_HDR);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "table {name} kept changing while read"
    )))
}

/// Zeroes each entry's counters (and `comefrom`, the kernel's own
/// bookkeeping), walking the entries by their `next_offset`.
fn zero_counters(entries: &mut [u8], l: EntryLayout) {
    let mut at = 0;
    while at + l.counters + 16 <= entries.len() {
        let next =
            u16::from_ne_bytes([entries[at + l.next_offset], entries[at + l.next_offset + 1]])
                as usize;
        entries[at + l.comefrom..at + l.comefrom + 4].fill(0);
        entries[at + l.counters..at + l.counters + 16].fill(0);
        if next == 0 {
            break;
        }
        at += next;
    }
}
