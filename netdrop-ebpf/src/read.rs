//! Three ways to read kernel memory behind a pointer, so one classifier
//! serves every drop probe:
//! - `Direct`: plain loads through BTF-typed pointers (`tp_btf` arguments
//!   and what is loaded from them); the verifier makes them fault-safe.
//! - `Cast`: plain loads through any address, after `bpf_rdonly_cast(p, 0)`
//!   (kernels that cast to `void`: `BPF_FEAT_RDONLY_CAST_TO_VOID`): the `dst_entry` behind
//!   `_skb_refdst`, packet headers, br_netfilter state.
//! - `Probe`: `bpf_probe_read_kernel`, valid anywhere, a helper call each.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use netdrop_common::KFUNC_CALL_PLACEHOLDER;

pub trait KernelRead {
    /// Each read is a helper call: read neighbouring fields in one go.
    const CALLS: bool;
    /// A header's bytes, as this reader gets at them.
    type Window<const N: usize>: Window;

    /// Reads a `T` at `base + off`; `None` when the read faulted.
    ///
    /// # Safety
    /// `base + off` must lie inside the kernel object `base` points to.
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Option<T>;

    /// The `N` bytes at kernel address `at`, to pick header fields from.
    ///
    /// # Safety
    /// `at` must be a kernel address (a fault reads as `None` or zeroes).
    unsafe fn window<const N: usize>(at: u64) -> Option<Self::Window<N>>;
}

/// Fields of a header in kernel memory, by byte offset (constant after
/// inlining, so copied windows are indexed within bounds).
pub trait Window {
    fn b1(&self, i: usize) -> u8;
    fn b4(&self, i: usize) -> [u8; 4];
    fn b8(&self, i: usize) -> [u8; 8];
}

/// A header copied to the stack by one probe read.
pub struct Copied<const N: usize>([u8; N]);

impl<const N: usize> Copied<N> {
    /// `M` bytes at `i` (zeroes past the end: never, with constant indices).
    #[inline(always)]
    fn take<const M: usize>(&self, i: usize) -> [u8; M] {
        let mut out = [0u8; M];
        if let Some(s) = self.0.get(i..i + M) {
            out.copy_from_slice(s);
        }
        out
    }
}

impl<const N: usize> Window for Copied<N> {
    #[inline(always)]
    fn b1(&self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }
    #[inline(always)]
    fn b4(&self, i: usize) -> [u8; 4] {
        self.take(i)
    }
    #[inline(always)]
    fn b8(&self, i: usize) -> [u8; 8] {
        self.take(i)
    }
}

/// A header read in place, one load per field.
pub struct InPlace(*const u8);

impl InPlace {
    #[inline(always)]
    fn load<T: Copy>(&self, i: usize) -> T {
        // SAFETY: `self.0` is typed or cast memory: the verifier turns the
        // load into a fault-safe one. Header fields sit at their natural
        // alignment within the header; the kernel reads them the same way.
        unsafe { core::ptr::read(self.0.add(i).cast::<T>()) }
    }
}

impl Window for InPlace {
    #[inline(always)]
    fn b1(&self, i: usize) -> u8 {
        self.load(i)
    }
    #[inline(always)]
    fn b4(&self, i: usize) -> [u8; 4] {
        self.load::<u32>(i).to_ne_bytes()
    }
    #[inline(always)]
    fn b8(&self, i: usize) -> [u8; 8] {
        self.load::<u64>(i).to_ne_bytes()
    }
}

/// Plain loads through a BTF-typed pointer (only valid on `tp_btf` arguments
/// and pointers loaded from them).
pub struct Direct;

impl KernelRead for Direct {
    const CALLS: bool = false;
    type Window<const N: usize> = InPlace;

    /// # Safety
    /// As [`KernelRead::read`].
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Option<T> {
        // SAFETY: the verifier checks the access against the kernel's BTF and
        // turns a fault into a zero read.
        Some(unsafe { core::ptr::read(base.add(off as usize).cast::<T>()) })
    }

    /// # Safety
    /// As [`KernelRead::window`].
    #[inline(always)]
    unsafe fn window<const N: usize>(at: u64) -> Option<InPlace> {
        Some(InPlace(at as *const u8))
    }
}

/// `bpf_probe_read_kernel`, valid on any kernel address.
pub struct Probe;

impl KernelRead for Probe {
    const CALLS: bool = true;
    type Window<const N: usize> = Copied<N>;

    /// # Safety
    /// As [`KernelRead::read`].
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Option<T> {
        // SAFETY: bpf_probe_read_kernel copies from any kernel address and fails, not faults, on a bad one.
        unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<T>()).ok() }
    }

    /// # Safety
    /// As [`KernelRead::window`].
    #[inline(always)]
    unsafe fn window<const N: usize>(at: u64) -> Option<Copied<N>> {
        // SAFETY: bpf_probe_read_kernel copies from any kernel address and fails, not faults, on a bad one.
        unsafe { bpf_probe_read_kernel(at as *const [u8; N]).ok() }.map(Copied)
    }
}

/// Plain loads through `bpf_rdonly_cast(addr, 0)`: any kernel address becomes
/// read-only untrusted memory, whose loads the verifier turns into
/// fault-safe ones (a fault reads zero): a few instructions where
/// `bpf_probe_read_kernel` is a call of ~40 ns here. The loader patches the
/// kfunc's BTF id into each call (`KFUNC_CALL_PLACEHOLDER`): aya 0.14 does
/// not resolve kfuncs.
pub struct Cast;

/// `bpf_rdonly_cast(p, 0)`: the same address, as untrusted read-only memory.
#[inline(always)]
fn rdonly_cast(p: u64) -> *const u8 {
    let out: u64;
    // SAFETY: the kfunc returns its first argument unchanged (the verifier
    // inlines it as `r0 = r1`); r1-r5 are clobbered, as by any call.
    unsafe {
        core::arch::asm!(
            ".byte {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}",
            const KFUNC_CALL_PLACEHOLDER[0],
            const KFUNC_CALL_PLACEHOLDER[1],
            const KFUNC_CALL_PLACEHOLDER[2],
            const KFUNC_CALL_PLACEHOLDER[3],
            const KFUNC_CALL_PLACEHOLDER[4],
            const KFUNC_CALL_PLACEHOLDER[5],
            const KFUNC_CALL_PLACEHOLDER[6],
            const KFUNC_CALL_PLACEHOLDER[7],
            inlateout("r1") p => _,
            inlateout("r2") 0u64 => _,
            lateout("r0") out,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(pure, nomem, nostack),
        );
    }
    out as *const u8
}

impl KernelRead for Cast {
    const CALLS: bool = false;
    type Window<const N: usize> = InPlace;

    /// # Safety
    /// As [`KernelRead::read`].
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Option<T> {
        let p = rdonly_cast(base as u64);
        // SAFETY: cast memory: the verifier makes the load fault-safe.
        Some(unsafe { core::ptr::read(p.add(off as usize).cast::<T>()) })
    }

    /// # Safety
    /// As [`KernelRead::window`].
    #[inline(always)]
    unsafe fn window<const N: usize>(at: u64) -> Option<InPlace> {
        Some(InPlace(rdonly_cast(at)))
    }
}
