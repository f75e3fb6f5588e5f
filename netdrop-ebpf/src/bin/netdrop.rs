//! Object `netdrop`: the drop probes (`tp_btf` and tracepoint on kfree_skb).
#![no_std]
#![no_main]

#[path = "../drop/mod.rs"]
mod drop;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects programs that could get here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
