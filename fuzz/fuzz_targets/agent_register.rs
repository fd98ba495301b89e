#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxp_fuzz::agent_register(data));
