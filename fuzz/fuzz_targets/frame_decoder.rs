//! Fuzz target: see `fuzz_harness::frame_decoder` in `tests/reliability/fuzz_harness.rs`.
#![no_main]

#[path = "../../tests/reliability/support.rs"]
mod support;

#[path = "../../tests/reliability/fuzz_harness.rs"]
mod fuzz_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_harness::frame_decoder(data);
});
