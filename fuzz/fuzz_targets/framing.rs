//! Line framing and classification on any bytes: no panic, every event a
//! piece of the line, every invalid line wrapped as valid JSON.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tailhook::event::{frame_line, wrap_invalid, Class, FrameSink, Invalid};

struct Check<'a>(&'a [u8]);

impl FrameSink for Check<'_> {
    fn event(&mut self, bytes: Bytes, _class: &Class<'_>) {
        assert!(bytes.is_empty() || self.0.windows(bytes.len()).any(|w| w == bytes.as_ref()));
    }
    fn invalid(&mut self, raw: Bytes, why: Invalid) {
        let wrapped = wrap_invalid(&raw, &why);
        assert!(std::str::from_utf8(&wrapped).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    frame_line(&Bytes::copy_from_slice(data), &mut Check(data));
});
