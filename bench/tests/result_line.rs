//! The binary speaks the peers' interface: their flags, one result line on
//! stdout, a detail line on stderr. (It checks the format, not the speed.)

use std::process::Command;

fn run(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .args(["--duration", "0.2", "--warmup=0.05"])
        .args(args)
        .output()
        .expect("run courier-bench");
    assert!(out.status.success(), "{args:?}: {out:?}");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn prints_the_peers_result_line() {
    for (transport, runtime, payload) in [
        ("mem", "smol", "0"),
        ("tcp", "smol", "16"),
        ("unix", "tokio", "4096"),
        ("tcp", "tokio", "0"),
    ] {
        let (stdout, stderr) = run(&[
            "--transport",
            transport,
            "--concurrency=4",
            "--payload",
            payload,
            "--runtime",
            runtime,
        ]);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{stdout:?}");
        let line = lines[0];
        assert!(line.starts_with("courier transport="), "{line}");
        assert_eq!(field(line, "transport"), transport);
        assert_eq!(field(line, "conc"), "4");
        assert_eq!(field(line, "payload"), payload);
        assert!(field(line, "calls_per_s").parse::<f64>().unwrap() > 0.0);
        field(line, "p50_us").parse::<f64>().unwrap();
        field(line, "p99_us").parse::<f64>().unwrap();
        assert!(stderr.contains("# courier: calls="), "{stderr}");
        assert!(stderr.contains(" errors=0 "), "{stderr}");
    }
}

#[test]
fn rejects_unknown_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .args(["--transport", "carrier-pigeon"])
        .output()
        .expect("run courier-bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--transport"));
}
