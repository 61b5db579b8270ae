//! `diffbc bench`: the table and its JSON records, measured on the shipped
//! reference policy.

use crate::support::{error_line, ok};
use std::path::Path;

fn bench_sieve() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/bench-sieve")
        .display()
        .to_string()
}

#[test]
fn bench_prints_a_table_and_writes_json_records() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("bench.json");
    let model = bench_sieve();
    let out = ok(&[
        "bench",
        &model,
        "--engine",
        "native",
        "--engine",
        "tract",
        "--threads",
        "1",
        "--sampler",
        "diffusion-x",
        "--sampler",
        "ddim",
        "--weights",
        "f32",
        "--weights",
        "int8",
        "--seconds",
        "0.05",
        "--min-iterations",
        "3",
        "--json",
        json.to_str().expect("utf-8"),
    ]);
    assert!(
        out.contains("| engine | weights | sampler | threads |"),
        "{out}"
    );
    assert!(out.contains("250 actions/s target"), "{out}");
    assert!(
        out.contains("Diffusion-X (M=8), batch 1, 1 thread: native int8 / native f32 = "),
        "{out}"
    );
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    assert_eq!(
        records.len(),
        8,
        "2 engines x 2 weight formats x 2 samplers: {records:?}"
    );
    for r in &records {
        for key in [
            "engine",
            "weights",
            "weight_bytes_per_call",
            "sampler",
            "threads",
            "actions_per_s",
            "p50_us",
            "p99_us",
            "gflops",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert!(r["actions_per_s"].as_f64().expect("number") > 0.0);
        assert!(r["p99_us"].as_f64() >= r["p50_us"].as_f64());
        assert!(r["gflops"].as_f64().expect("FLOPs counted") > 0.0);
        assert_eq!(r["threads"], 1);
    }
    let native: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["engine"] == "native").collect();
    assert_eq!(native.len(), 4);
    // The native engine keeps int8 weights in a byte: about a quarter of
    // the f32 bytes per denoiser call.
    let bytes = |w: &str| {
        native
            .iter()
            .find(|r| r["weights"] == w)
            .and_then(|r| r["weight_bytes_per_call"].as_u64())
            .expect("native counts its weight bytes")
    };
    assert!(
        bytes("int8") * 3 < bytes("f32"),
        "{} vs {}",
        bytes("int8"),
        bytes("f32")
    );
    // The shipped binary has no counting allocator: the column says so
    // instead of a made-up 0 (runtime/tests/no_alloc.rs and
    // deploy/tests/bench_alloc.rs count with one).
    for r in native {
        assert!(r["allocs_per_act"].is_null(), "{r}");
    }
    // Diffusion-X (T=50, M=8) is 58 network calls, DDIM(S=10) is 10.
    let calls: Vec<u64> = records
        .iter()
        .map(|r| r["network_calls"].as_u64().unwrap_or(0))
        .collect();
    assert!(calls.contains(&58) && calls.contains(&10), "{calls:?}");
}

#[test]
fn bench_refuses_a_folder_that_is_not_a_policy() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = error_line(&["bench", dir.path().to_str().expect("utf-8")]);
    assert!(e.contains("manifest.json"), "{e}");
}
