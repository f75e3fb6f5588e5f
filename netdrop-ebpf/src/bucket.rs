//! Per-CPU token buckets for rate-limited samples. Refilled at most once
//! per jiffy: reading jiffies is a load, the precise clock costs ~80 ns per
//! event under a flood on the machines measured (BENCHMARKS.md).

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};
use netdrop_common::TokenBucket;

const NANOS: u64 = 1_000_000_000;

/// Takes one token from `b`, refilled at `rate` per second up to `burst`.
#[inline(always)]
pub fn take_token(b: &mut TokenBucket, rate: u32, burst: u32) -> bool {
    // SAFETY: a helper with no arguments and no preconditions.
    let jiffies = unsafe { bpf_jiffies64() };
    if jiffies != b.last_jiffies {
        b.last_jiffies = jiffies;
        // SAFETY: a helper with no arguments and no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        let elapsed = now.wrapping_sub(b.last_ns).min(10 * NANOS);
        b.last_ns = now;
        let cap = u64::from(burst) * NANOS;
        b.tokens = (b.tokens + elapsed * u64::from(rate)).min(cap);
    }
    if b.tokens >= NANOS {
        b.tokens -= NANOS;
        true
    } else {
        false
    }
}
