//! netdrop's kernel programs. Two objects are built from this crate:
//! `netdrop` (drop capture on kfree_skb, loaded once per host) and
//! `observe` (TC observers, loaded once per observed node, so each node's
//! interfaces and counters stay apart). Each program is a thin shim over a
//! `try_*` function; the shims turn errors into "do nothing", since an
//! observer must never change a packet's fate.
#![no_std]
// Inline asm emits the kfunc call aya 0.14 cannot relocate (`read::Cast`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

// Shared helpers only: maps and programs live in the object that owns them
// (src/bin/*.rs includes its program folder), so neither object carries the
// other's maps.
pub mod bucket;
pub mod headers;
pub mod pods;
pub mod read;

/// Reads one field of a read-only global. Volatile, so the compiler keeps the
/// load from `.rodata` (which the verifier then treats as a constant) rather
/// than folding in the zero the object file was built with.
#[inline(always)]
pub fn global<T: Copy>(field: &T) -> T {
    // SAFETY: a reference to a static is valid to read.
    unsafe { core::ptr::read_volatile(field) }
}

/// What every object (`src/bin/*.rs`) needs besides its programs: a panic
/// handler (unreachable: the verifier rejects programs that could panic)
/// and the GPL license (kfuncs and several helpers are GPL-only).
#[macro_export]
macro_rules! object_boilerplate {
    () => {
        #[cfg(not(test))]
        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo) -> ! {
            loop {}
        }

        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 4] = *b"GPL\0";
    };
}
