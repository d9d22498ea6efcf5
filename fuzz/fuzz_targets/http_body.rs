//! The `http` input's body handling (gzip, JSON) on any bytes: no panic;
//! what it takes becomes lines that are each one JSON object. The first
//! byte says whether the rest is sent as gzip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    if let Ok((lines, n)) = tailhook::body_lines(body, first & 1 == 1, 1 << 20) {
        let text = std::str::from_utf8(&lines).expect("lines are UTF-8");
        assert_eq!(text.lines().count(), n);
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("a line is JSON");
            assert!(v.is_object());
        }
    }
});
