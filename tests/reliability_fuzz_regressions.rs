//! Replays stored fuzz inputs through the fuzz harness functions, so that
//! every crash the fuzzers found (and a sample of their corpus) stays fixed
//! in the normal `cargo test`.
//!
//! Inputs live in `tests/fuzz_regressions/<target>/`, one file per input
//! (minimised crash inputs are named after the bug they found). The seed
//! streams below are the fuzzers' starting corpus; with
//! `COURIER_FUZZ_SEEDS=<dir>` set, this test also writes them to
//! `<dir>/<target>/` for `cargo fuzz run <target> <dir>/<target>`.

#[path = "reliability/support.rs"]
mod support;

use support::frame;

#[path = "reliability/fuzz_harness.rs"]
mod fuzz_harness;

use std::path::{Path, PathBuf};

use courier::framing::split_frame;
use courier::wire::Header;
use courier::{MethodKey, RemoteError};
use support::ProbeClient;

fn stored_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

/// Runs `harness` on every stored input of `target` and on `seeds`.
fn replay(target: &str, seeds: &[Vec<u8>], harness: impl Fn(&[u8])) {
    if let Some(dir) = std::env::var_os("COURIER_FUZZ_SEEDS") {
        let dir = Path::new(&dir).join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
    let stored = stored_inputs(target);
    assert!(!stored.is_empty(), "no stored inputs for {target}");
    for (path, input) in &stored {
        eprintln!("replaying {}", path.display());
        harness(input);
    }
    for seed in seeds {
        harness(seed);
    }
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn request(id: u32, method: MethodKey, timeout_ms: Option<u32>, body: &[u8]) -> Vec<u8> {
    frame(Header::request(id, method, timeout_ms), body)
}

/// Well-formed calls of every method, cancels, timeouts and bad frames.
fn session() -> Vec<u8> {
    let mut s = Vec::new();
    let mut add = Vec::new();
    varint(2, &mut add);
    varint(3, &mut add);
    s.extend(request(1, ProbeClient::ADD, None, &add));
    s.extend(request(
        2,
        ProbeClient::ECHO,
        Some(1000),
        &[5, b'h', b'e', b'l', b'l', b'o'],
    ));
    s.extend(request(3, ProbeClient::YIELDS, None, &[3]));
    s.extend(request(4, ProbeClient::FILL, None, &[7, 100]));
    s.extend(request(5, ProbeClient::MAYBE_PANIC, None, &[9, 0]));
    s.extend(request(6, ProbeClient::GATED, None, &[6]));
    s.extend(frame(Header::Cancel { id: 6 }, &[]));
    s.extend(request(7, ProbeClient::GATED, Some(5), &[7]));
    s.extend(request(8, MethodKey(42), None, &[]));
    s.extend(request(9, ProbeClient::ADD, None, &[0xff; 11]));
    s.extend(frame(
        Header::Reserved {
            kind: 9,
            flags: 0,
            id: 10,
        },
        b"skip me",
    ));
    s.extend(frame(Header::Response { id: 11 }, &[1]));
    s
}

fn server_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let configs = [
        [63, 1, 0x00],
        [0, 2, 0x01],
        [6, 3, 0x32],
        [255, 4, 0xf3],
        [9, 5, 0x74],
        [1, 6, 0x15],
    ];
    for config in configs {
        let mut input = config.to_vec();
        input.extend(session());
        seeds.push(input.clone());
        // The same, cut in the middle of a frame.
        input.truncate(input.len() - 3);
        seeds.push(input);
    }
    let mut oversized = vec![16, 5, 0];
    oversized.extend(u32::MAX.to_le_bytes());
    seeds.push(oversized);
    seeds
}

fn decoder_seeds() -> Vec<Vec<u8>> {
    let mut stream = vec![0x00, 0x01, 17]; // limit 256, seed 17
    stream.extend(session());
    let mut small = vec![20, 0, 3]; // limit 20: some frames are too large
    small.extend(session());
    vec![stream, small, vec![0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff]]
}

fn header_seeds() -> Vec<Vec<u8>> {
    session()
        .chunks(7)
        .map(<[u8]>::to_vec)
        .chain([
            request(1, ProbeClient::ADD, Some(9), &[])[4..].to_vec(),
            vec![1, 2, 0, 1, 0, 0, 0, 5],
            vec![2, 0, 0, 0, 0, 0, 0],
            vec![1, 1, 1, 0, 0, 0, 0],
        ])
        .collect()
}

#[test]
fn frame_decoder_inputs() {
    replay(
        "frame_decoder",
        &decoder_seeds(),
        fuzz_harness::frame_decoder,
    );
}

#[test]
fn header_inputs() {
    replay("header", &header_seeds(), fuzz_harness::header);
}

#[test]
fn server_stream_inputs() {
    replay("server_stream", &server_seeds(), |input| {
        fuzz_harness::server_stream(input);
    });
}

/// The harness really serves: the well-formed session gets the replies a
/// client would expect, in whatever order, under every configuration.
#[test]
fn server_stream_session_gets_the_expected_replies() {
    for seed in server_seeds().iter().step_by(2).take(4) {
        let replies = fuzz_harness::server_stream(seed);
        let mut got = Vec::new();
        let mut bytes = &replies[..];
        while let Some((frame, used)) = split_frame(bytes, 4096).unwrap() {
            let (header, body_at) = Header::decode(frame).unwrap();
            got.push((header, frame[body_at..].to_vec()));
            bytes = &bytes[used..];
        }
        got.sort_by_key(|(header, _)| header.id());
        let expect_ok = |id: u32, body: &[u8]| (Header::Response { id }, body.to_vec());
        let expect_err = |id: u32, error: RemoteError| (Header::Error { id, error }, Vec::new());
        let mut expected = vec![
            expect_ok(1, &[5]),
            expect_ok(2, &[5, b'h', b'e', b'l', b'l', b'o']),
            expect_ok(3, &[3]),
            {
                let mut body = vec![100];
                body.extend([7; 100]);
                expect_ok(4, &body)
            },
            expect_ok(5, &[9]),
            expect_err(8, RemoteError::UnknownMethod),
            expect_err(9, RemoteError::BadRequest),
        ];
        // Calls 6 and 7 wait on a gate the harness opens when all is
        // quiet and no timer is due: 6 is cancelled (no reply) and 7 times
        // out after 5 ms. Even when the server runs calls one at a time its
        // full table does not stop it reading: the cancel reaches it, and 7
        // times out in the backlog.
        expected.push(expect_err(7, RemoteError::DeadlineExceeded));
        expected.sort_by_key(|(header, _)| header.id());
        assert_eq!(got, expected, "config {:?}", &seed[..3]);
    }
}
