//! netdrop's kernel programs. Each program is a thin shim over a `try_*`
//! function in its own module; the shims turn errors into "do nothing", since
//! an observer must never change a packet's fate.
#![no_std]
#![no_main]

mod drop;
mod headers;
mod read;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects programs that could get here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
