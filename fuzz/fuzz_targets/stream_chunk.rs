#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxp_fuzz::stream_chunk(data));
