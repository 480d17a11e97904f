#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvstore::fuzzing::store_refs(data));
