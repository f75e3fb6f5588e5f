//! Two ways to read kernel memory behind a pointer, so one classifier serves
//! both drop probes: plain loads for BTF-typed pointers (`tp_btf`, fastest:
//! the verifier turns them into fault-safe loads), and `bpf_probe_read_kernel`
//! for untyped addresses (plain tracepoint, `dst_entry` behind `_skb_refdst`).

use aya_ebpf::helpers::bpf_probe_read_kernel;

pub trait KernelRead {
    /// Reads a `T` at `base + off`; `None` when the read faulted.
    ///
    /// # Safety
    /// `base + off` must lie inside the kernel object `base` points to.
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Option<T>;
}

/// Plain loads through a BTF-typed pointer (only valid on `tp_btf` arguments
/// and pointers loaded from them).
pub struct Direct;

impl KernelRead for Direct {
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Option<T> {
        // SAFETY: the verifier checks the access against the kernel's BTF and
        // turns a fault into a zero read.
        Some(unsafe { core::ptr::read(base.add(off as usize).cast::<T>()) })
    }
}

/// `bpf_probe_read_kernel`, valid on any kernel address.
pub struct Probe;

impl KernelRead for Probe {
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Option<T> {
        unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<T>()).ok() }
    }
}
