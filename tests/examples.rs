//! Every TOML example in `examples/` is a valid config: `tailhook check`
//! accepts it, as an operator copying it would run it.

mod support;

use support::process::run_cmd;

#[test]
fn every_example_config_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::tls::make_pki();
    let ca = pki.write_ca(dir.path());
    let ca = ca.to_str().unwrap();
    let (cert, key) = pki.write_server(dir.path());
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let exit = run_cmd(
                &["check", "-c", path.to_str().unwrap()],
                &[
                    ("TAILHOOK_CA_FILE", ca),
                    ("TAILHOOK_TLS_CERT", cert.to_str().unwrap()),
                    ("TAILHOOK_TLS_KEY", key.to_str().unwrap()),
                ],
            );
            assert!(exit.success(), "{}:\n{}", path.display(), exit.output());
            assert!(exit.stderr.contains("config is valid"), "{}", exit.output());
            checked += 1;
        }
    }
    assert!(checked >= 5, "found {checked} example configs");
}
