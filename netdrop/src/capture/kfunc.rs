//! Kfunc calls in netdrop's object. aya 0.14 does not resolve kfuncs, so the
//! eBPF crate emits each `bpf_rdonly_cast` call with a placeholder id
//! (`KFUNC_CALL_PLACEHOLDER`) and this writes the running kernel's BTF id
//! into a copy of the object before aya loads it. Only instructions (8-byte
//! slots of executable sections) are touched.

use object::{Object as _, ObjectSection as _, SectionKind};

use netdrop_common::KFUNC_CALL_PLACEHOLDER as PLACEHOLDER;

#[derive(Debug, thiserror::Error)]
pub enum KfuncError {
    #[error("netdrop's eBPF object is not a readable ELF file: {0}")]
    Elf(#[from] object::Error),
}

/// A copy of the object, 8-byte aligned like the embedded original (the
/// ELF reader wants aligned headers).
pub struct PatchedObject {
    words: Vec<u64>,
    len: usize,
}

impl PatchedObject {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// Copies `obj` with every placeholder kfunc call pointed at `btf_id`;
/// returns the copy and how many calls were patched.
pub fn patch_calls(obj: &[u8], btf_id: u32) -> Result<(PatchedObject, usize), KfuncError> {
    let mut words = vec![0u64; obj.len().div_ceil(8)];
    // SAFETY: the vector spans at least `obj.len()` bytes.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), obj.len()) };
    bytes.copy_from_slice(obj);
    let mut ranges = Vec::new();
    for section in object::File::parse(obj)?.sections() {
        if section.kind() == SectionKind::Text
            && let Some((start, size)) = section.file_range()
        {
            ranges.push((start as usize, size as usize));
        }
    }
    let mut patched = 0;
    for (start, size) in ranges {
        let Some(text) = bytes.get_mut(start..start.saturating_add(size)) else {
            continue;
        };
        for insn in text.chunks_exact_mut(8) {
            if insn == PLACEHOLDER {
                insn[4..].copy_from_slice(&btf_id.to_le_bytes());
                patched += 1;
            }
        }
    }
    Ok((
        PatchedObject {
            words,
            len: obj.len(),
        },
        patched,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_every_cast_call_in_the_drop_object_and_nothing_else() {
        let (patched, n) = patch_calls(crate::EBPF_OBJECT, 0x0102_0304).unwrap();
        // Both kfree_skb builds read through casts; the probe-read one has none.
        assert!(n >= 2, "only {n} kfunc calls patched");
        let original = crate::EBPF_OBJECT;
        let changed = original
            .iter()
            .zip(patched.bytes())
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed <= n * 4, "{changed} bytes changed for {n} calls");
        let count =
            |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(patched.bytes(), &PLACEHOLDER), 0);
        let call = [0x85, 0x20, 0, 0, 4, 3, 2, 1];
        assert_eq!(count(patched.bytes(), &call), n);
    }

    #[test]
    fn a_non_elf_object_is_an_error() {
        assert!(patch_calls(b"not an ELF file", 1).is_err());
    }
}
