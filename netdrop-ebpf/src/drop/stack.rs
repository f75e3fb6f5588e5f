//! The hook of a sampled drop whose routing state is ambiguous (bridged,
//! loopback, routed hairpin), from the kernel stack: the innermost return
//! address inside a function that calls a netfilter hook (`ip_rcv`,
//! `ip_local_deliver`, `ip_forward`, `ip_output`, their IPv6 twins,
//! br_netfilter's) names it. A walk costs about 2.7 µs here, so only
//! rate-limited samples take one, never the counted path.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_get_stack;
use netdrop_common::{HOOK_RANGES, hook};

use netdrop_ebpf::global;

use super::LAYOUT;

/// Return addresses walked: the tracing trampoline, the drop itself, the
/// table (`nft_do_chain`/`ipt_do_table`), `nf_hook_slow`, then the caller;
/// room to spare for inlining differences.
const STACK_FRAMES: usize = 12;

/// The hook whose caller is innermost on the stack; UNKNOWN when none is
/// (its symbols were not found).
#[inline(always)]
pub fn hook_from_stack(ctx: *mut c_void) -> u8 {
    let mut frames = [0u64; STACK_FRAMES];
    // SAFETY: `frames` is a local array of the size passed; `ctx` is this program's context.
    let got = unsafe {
        bpf_get_stack(
            ctx,
            frames.as_mut_ptr().cast(),
            core::mem::size_of_val(&frames) as u32,
            0,
        )
    };
    if got <= 0 {
        return hook::UNKNOWN;
    }
    let n = (got as usize) / 8;
    for (i, ip) in frames.iter().enumerate() {
        if i >= n {
            break;
        }
        for r in 0..HOOK_RANGES {
            let range = &LAYOUT.hook_ranges[r];
            if *ip >= global(&range.lo) && *ip < global(&range.hi) {
                return global(&range.hook);
            }
        }
    }
    hook::UNKNOWN
}
