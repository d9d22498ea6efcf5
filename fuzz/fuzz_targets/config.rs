//! The config loader (`${VAR}` expansion, TOML, validation) on any text:
//! no panic, and an error is never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |k: &str| (k.len() % 2 == 0).then(|| format!("v{k}"));
    if let Err(e) = tailhook::Config::parse(std::path::Path::new("fuzz.toml"), text, env) {
        assert!(!e.to_string().is_empty());
    }
});
