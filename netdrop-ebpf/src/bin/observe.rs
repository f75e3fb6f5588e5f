//! Object `observe`: TC observers on a node's overlay, bridge and underlay.
#![no_std]
#![no_main]

#[path = "../observe/mod.rs"]
mod observe;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
