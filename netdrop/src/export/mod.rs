//! Export: what netdrop tells the world — lines on stdout (text or JSON).

pub mod metrics;
pub mod record;
pub mod stdout;
