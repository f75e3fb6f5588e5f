//! Netlink attributes (`struct nlattr`: length, type, value, padded to 4
//! bytes) as nf_tables sends them: big-endian numbers, nested lists.

/// The attributes of `buf`, in order. Stops at the first malformed one.
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs(buf)
}

pub struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    /// (type, without the nested/byte-order flags; value)
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        self.0 = b.get((len + 3) & !3..).unwrap_or(&[]);
        Some((kind, &b[4..len]))
    }
}

/// The value of attribute `kind` in `buf`.
pub fn get(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|(k, _)| *k == kind).map(|(_, v)| v)
}

/// A NUL-terminated string attribute.
pub fn string(buf: &[u8], kind: u16) -> Option<String> {
    get(buf, kind).map(|v| {
        let v = v.split(|&b| b == 0).next().unwrap_or(v);
        String::from_utf8_lossy(v).into_owned()
    })
}

pub fn be32(buf: &[u8], kind: u16) -> Option<u32> {
    Some(u32::from_be_bytes(
        get(buf, kind)?.get(..4)?.try_into().ok()?,
    ))
}

pub fn be64(buf: &[u8], kind: u16) -> Option<u64> {
    Some(u64::from_be_bytes(
        get(buf, kind)?.get(..8)?.try_into().ok()?,
    ))
}

pub fn u8_of(buf: &[u8], kind: u16) -> Option<u8> {
    get(buf, kind)?.first().copied()
}

/// libnftnl's user data (a rule's, chain's, set's or element's): TLVs of
/// one byte type, one byte length. The comment, where there is one.
pub fn udata_comment(udata: &[u8], comment_type: u8) -> Option<String> {
    let mut b = udata;
    while b.len() >= 2 {
        let (kind, len) = (b[0], b[1] as usize);
        let value = b.get(2..2 + len)?;
        if kind == comment_type {
            let v = value.split(|&c| c == 0).next().unwrap_or(value);
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        b = &b[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_and_malformed_ones_end_the_list() {
        // NAME "ab" (len 6, padded to 8), then a be32 (len 8).
        let mut buf = vec![6, 0, 1, 0, b'a', b'b', 0, 0, 8, 0, 2, 0x80, 0, 0, 1, 2];
        assert_eq!(string(&buf, 1).as_deref(), Some("ab"));
        assert_eq!(be32(&buf, 2), Some(0x0102));
        buf.extend([200, 0, 3, 0]); // claims 200 bytes
        assert_eq!(attrs(&buf).count(), 2);
        assert_eq!(get(&[1, 0], 1), None);
        assert_eq!(
            udata_comment(&[0, 3, b'h', b'i', 0], 0).as_deref(),
            Some("hi")
        );
        assert_eq!(udata_comment(&[0, 9, b'h'], 0), None);
    }
}
