//! The exported policies shipped in `models/`: their manifests match their
//! graphs, tract reproduces the trainer's golden outputs, and a tampered or
//! inconsistent folder is refused with a message naming what is wrong.

use diffbc_runtime::{EngineChoice, OnnxModel, PolicyError, WeightFormat};
use std::path::{Path, PathBuf};

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn shipped() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .expect("models/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn shipped_models_match_their_manifests_and_golden_outputs() {
    let dirs = shipped();
    assert!(
        dirs.iter().any(|d| d.ends_with("claw")),
        "models/claw must ship, found {dirs:?}"
    );
    assert!(
        dirs.iter().any(|d| d.ends_with("bench-sieve")),
        "models/bench-sieve must ship, found {dirs:?}"
    );
    assert!(
        dirs.iter().any(|d| d.ends_with("pusht-state")),
        "models/pusht-state must ship, found {dirs:?}"
    );
    for dir in dirs {
        for engine in EngineChoice::pure_rust() {
            let mut policy = OnnxModel::load(&dir, engine)
                .unwrap_or_else(|e| panic!("{} on {engine}: {e}", dir.display()));
            let (worst, batches) = policy.golden_max_diff(&dir).expect("golden cases run");
            assert!(!batches.is_empty(), "{}: no golden cases", dir.display());
            assert!(
                worst <= 1e-4,
                "{}: {engine} is off the trainer's outputs by {worst}",
                dir.display()
            );
        }
    }
}

/// The end-to-end contract: every shipped model's golden episodes (the
/// observations, the recorded random draws, the actions) are reproduced by
/// each engine within 1e-4 in the head's units, consuming every draw.
#[test]
fn shipped_models_reproduce_their_end_to_end_golden_episodes_on_every_engine() {
    for dir in shipped() {
        let m = diffbc_runtime::policy::read_manifest(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .0;
        for engine in EngineChoice::pure_rust() {
            let r = diffbc_runtime::replay::replay(&dir, engine)
                .unwrap_or_else(|e| panic!("{} on {engine}: {e}", dir.display()));
            // The default sampler and every named one, each with episodes.
            let (_, index) = diffbc_runtime::replay::read_index(&dir).expect("index");
            let covered: std::collections::BTreeSet<&str> =
                index.cases.iter().map(|c| c.sampler.as_str()).collect();
            let named: std::collections::BTreeSet<&str> = std::iter::once("default")
                .chain(m.samplers.keys().map(String::as_str))
                .collect();
            assert_eq!(covered, named, "{}: samplers with cases", dir.display());
            assert_eq!(r.cases, index.cases.len(), "{}: cases", dir.display());
            assert!(
                r.worst_normalised <= 1e-4,
                "{} on {engine}: actions off the golden episodes by {} (head units), {} raw",
                dir.display(),
                r.worst_normalised,
                r.worst_raw
            );
            println!(
                "{} {engine}: {} cases, {} ticks, worst {:.2e} (head units), {:.2e} raw",
                dir.display(),
                r.cases,
                r.ticks,
                r.worst_normalised,
                r.worst_raw
            );
        }
    }
}

/// Copy the shipped claw model into a temporary folder.
fn scratch_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dst = tmp.path().join("m");
    let src = models_dir().join("claw");
    std::fs::create_dir_all(&dst).expect("mkdir");
    for f in ["manifest.json", "encoder.onnx", "denoiser.onnx"] {
        std::fs::copy(src.join(f), dst.join(f)).expect("copy");
    }
    (tmp, dst)
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(&p, v.to_string()).expect("write");
}

fn load_err(dir: &Path) -> String {
    OnnxModel::load(dir, EngineChoice::default())
        .expect_err("must be refused")
        .to_string()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).expect("read"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_graph_that_does_not_match_its_hash_is_refused() {
    let (_tmp, dir) = scratch_copy();
    let mut bytes = std::fs::read(dir.join("denoiser.onnx")).expect("read");
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(dir.join("denoiser.onnx"), bytes).expect("write");
    let e = OnnxModel::load(&dir, EngineChoice::default()).expect_err("refused");
    assert!(matches!(e, PolicyError::Hash { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("denoiser.onnx") && msg.contains("do not belong together"),
        "{msg}"
    );
}

#[test]
fn inconsistent_manifests_are_refused_naming_the_field() {
    let (_t1, dir) = scratch_copy();
    edit_manifest(&dir, |v| v["format_version"] = 99.into());
    let e = load_err(&dir);
    assert!(
        e.contains("manifest.json") && e.contains("format_version 99"),
        "{e}"
    );

    let (_t2, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["normalization"]["action"]["mean"] = serde_json::json!([0.0, 0.0, 0.0])
    });
    let e = load_err(&dir);
    assert!(e.contains("normalization.action"), "{e}");

    let (_t3, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["schedule"]["betas"].as_array_mut().expect("betas").pop();
    });
    let e = load_err(&dir);
    assert!(e.contains("schedule.steps"), "{e}");

    let (_t4, dir) = scratch_copy();
    edit_manifest(&dir, |v| v["head"]["inputs"][1]["name"] = "a_tau".into());
    let e = load_err(&dir);
    assert!(e.contains("head.inputs"), "{e}");

    let (_t5, dir) = scratch_copy();
    edit_manifest(&dir, |v| v["surprise"] = 1.into());
    let e = load_err(&dir);
    assert!(e.contains("unknown field") && e.contains("surprise"), "{e}");

    // Chunking that cannot hold: more executed than predicted, or an action
    // vector (2 values here) that is not a whole number of chunk actions.
    let (_t7, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["chunk"] = serde_json::json!({"horizon": 2, "execute": 3})
    });
    let e = load_err(&dir);
    assert!(
        e.contains("manifest.json") && e.contains("chunk.execute"),
        "{e}"
    );
    let (_t8, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["chunk"] = serde_json::json!({"horizon": 3, "execute": 1})
    });
    let e = load_err(&dir);
    assert!(e.contains("chunk.horizon 3"), "{e}");

    // The encoder graph put in the head's place, with its hash updated: the
    // graph's own inputs give it away.
    let (_t6, dir) = scratch_copy();
    std::fs::copy(dir.join("encoder.onnx"), dir.join("denoiser.onnx")).expect("copy");
    let sha = sha256_hex(&dir.join("denoiser.onnx"));
    edit_manifest(&dir, |v| v["head"]["sha256"] = sha.into());
    for engine in EngineChoice::pure_rust() {
        let e = OnnxModel::load(&dir, engine)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("denoiser.onnx") && e.contains("graph inputs are"),
            "{engine}: {e}"
        );
    }
}

#[test]
fn a_format_1_folder_is_refused_with_the_command_that_upgrades_it() {
    let (_tmp, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["format_version"] = 1.into();
    });
    let e = load_err(&dir);
    assert!(
        e.contains("format_version 1") && e.contains("diffbc export --upgrade"),
        "{e}"
    );
}

#[test]
fn channels_that_do_not_describe_the_frame_are_refused_naming_the_field() {
    let (_tmp, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["channels"]["observation"][0]["shape"] = serde_json::json!([3, 64, 63]);
    });
    let e = load_err(&dir);
    assert!(
        e.contains("channels.observation describe 12096 values, the frame has 12288"),
        "{e}"
    );
    let (_tmp, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["deployment"]["control_hz"] = (-10.0).into();
    });
    let e = load_err(&dir);
    assert!(e.contains("deployment.control_hz -10"), "{e}");
}

/// Copy a whole shipped folder (graphs, golden tensors and episodes).
fn full_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dst = tmp.path().join(name);
    let src = models_dir().join(name);
    std::fs::create_dir_all(dst.join("golden")).expect("mkdir");
    for sub in ["", "golden"] {
        for e in std::fs::read_dir(src.join(sub)).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_file() {
                std::fs::copy(&p, dst.join(sub).join(p.file_name().expect("name"))).expect("copy");
            }
        }
    }
    (tmp, dst)
}

/// The replay check can fail: other draws give other actions, and a draw
/// order that leaves draws unused (or needs more) is an error, not a pass.
#[test]
fn replaying_other_draws_or_too_few_is_caught() {
    use diffbc_runtime::golden::{read_npy, write_npy};
    let (_tmp, dir) = full_copy("pusht-state");
    let g = dir.join("golden");
    let (shape, z) = read_npy(&g.join("ep-default-0.normal.npy")).expect("npy");
    // (One changed starting value is washed out by Push-T's schedule, whose
    // ᾱ_T is 0.007; flipping every draw is not.)
    let flipped: Vec<f32> = z.iter().map(|v| -v).collect();
    write_npy(&g.join("ep-default-0.normal.npy"), &shape, &flipped).expect("write");
    let r = diffbc_runtime::replay::replay(&dir, EngineChoice::Native).expect("replays");
    assert!(
        r.worst_normalised > 1e-3,
        "a changed draw changed nothing: {r:?}"
    );
    write_npy(&g.join("ep-default-0.normal.npy"), &[z.len() - 1], &z[1..]).expect("write");
    let e = diffbc_runtime::replay::replay(&dir, EngineChoice::Native)
        .expect_err("too few draws")
        .to_string();
    assert!(
        e.contains("case default-0") && e.contains("asked for more"),
        "{e}"
    );
    let mut longer = z.clone();
    longer.push(0.5);
    longer.push(0.5);
    write_npy(&g.join("ep-default-0.normal.npy"), &[longer.len()], &longer).expect("write");
    let e = diffbc_runtime::replay::replay(&dir, EngineChoice::Native)
        .expect_err("unused draws")
        .to_string();
    assert!(e.contains(&format!("of the {}", longer.len())), "{e}");
}

/// A copy of a shipped folder in `format`, written from its f32 graphs, with
/// the shipped per-graph golden tensors (the trainer's f32 outputs) beside it.
fn variant(name: &str, format: WeightFormat) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dst = tmp.path().join(name);
    let src = models_dir().join(name);
    std::fs::create_dir_all(dst.join("golden")).expect("mkdir");
    diffbc_runtime::weights::write_variant(&src, &dst, format).expect("variant");
    for e in std::fs::read_dir(src.join("golden")).expect("golden") {
        let p = e.expect("entry").path();
        let file = p.file_name().expect("name").to_string_lossy().into_owned();
        if !file.starts_with("ep-") && file != "episodes.json" {
            std::fs::copy(&p, dst.join("golden").join(&file)).expect("copy");
        }
    }
    (tmp, dst)
}

/// Every golden input of `dir` through `graph` on `model`: the outputs.
fn golden_outputs(model: &mut OnnxModel, dir: &Path) -> Vec<Vec<f32>> {
    use diffbc_runtime::engine::GraphId;
    use diffbc_runtime::golden::{GoldenCase, read_npy};
    let g = dir.join("golden");
    let cases: Vec<GoldenCase> =
        serde_json::from_str(&std::fs::read_to_string(g.join("index.json")).expect("index"))
            .expect("json");
    let mut outs = Vec::new();
    for c in cases {
        let inputs: Vec<Vec<f32>> = c
            .inputs
            .iter()
            .map(|t| read_npy(&g.join(&t.file)).expect("npy").1)
            .collect();
        let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let want = read_npy(&g.join(&c.outputs[0].file)).expect("npy").1;
        let mut got = vec![0.0; want.len()];
        let graph = if c.graph == "encoder" {
            GraphId::Encoder
        } else {
            GraphId::Head
        };
        model
            .run_graph(graph, c.batch, &refs, &mut got)
            .expect("run");
        outs.push(got);
    }
    outs
}

/// The shipped models in f16 and int8: tract and the native engine (which
/// keeps the weights in 2 and 1 bytes) stay within the format's tolerance of
/// the trainer's f32 outputs, agree with each other within 1e-4 on the
/// reduced graphs, and the native engine reads about a half and a quarter of
/// the f32 bytes per call.
#[test]
fn reduced_precision_variants_of_the_shipped_models_stay_within_their_tolerance() {
    for name in ["bench-sieve", "claw", "arm", "pusht-state"] {
        let (m32, _) =
            diffbc_runtime::policy::read_manifest(&models_dir().join(name)).expect("manifest");
        let (_, head32) =
            diffbc_runtime::policy::weight_bytes_per_call(&models_dir().join(name), &m32)
                .expect("native compiles");
        for format in [WeightFormat::F16, WeightFormat::Int8] {
            let (_tmp, dir) = variant(name, format);
            let mut outs = Vec::new();
            for engine in EngineChoice::pure_rust() {
                let mut model = OnnxModel::load(&dir, engine)
                    .unwrap_or_else(|e| panic!("{name} {format} on {engine}: {e}"));
                let g = model.golden_worst(&dir).expect("golden");
                println!(
                    "{name} {format} {engine}: {:.2e} ({:.2e} relative) off the f32 golden outputs",
                    g.absolute, g.relative
                );
                assert!(
                    g.within(format) && g.relative > 0.0,
                    "{name} {format} on {engine}: {g:?} off the trainer's f32 outputs"
                );
                outs.push(golden_outputs(&mut model, &dir));
            }
            // Every engine of this build against the native one.
            let apart = outs
                .iter()
                .skip(1)
                .flat_map(|o| o.iter().flatten().zip(outs[0].iter().flatten()))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                apart <= 1e-4,
                "{name} {format}: the engines are {apart} apart"
            );
            let (m, _) = diffbc_runtime::policy::read_manifest(&dir).expect("manifest");
            assert_eq!(m.weights, format);
            let (_, head) =
                diffbc_runtime::policy::weight_bytes_per_call(&dir, &m).expect("native compiles");
            let per = if format == WeightFormat::F16 { 2 } else { 4 };
            assert!(
                head * per < head32 * 11 / 10 && head * per > head32 * 9 / 10,
                "{name} {format}: {head} bytes per call against {head32} in f32"
            );
        }
    }
}

/// The manifest's `weights` must say what the graphs store, both ways.
#[test]
fn a_weights_field_that_does_not_match_the_graphs_is_refused() {
    let (_t1, dir) = variant("claw", WeightFormat::Int8);
    edit_manifest(&dir, |v| {
        v.as_object_mut().expect("object").remove("weights");
    });
    let e = load_err(&dir);
    assert!(
        e.contains("manifest.json") && e.contains("weights is f32") && e.contains("stores int8"),
        "{e}"
    );
    let (_t2, dir) = scratch_copy();
    edit_manifest(&dir, |v| v["weights"] = "f16".into());
    let e = load_err(&dir);
    assert!(
        e.contains("weights is f16, but neither graph stores f16"),
        "{e}"
    );
    let (_t3, dir) = scratch_copy();
    edit_manifest(&dir, |v| v["weights"] = "bf16".into());
    let e = load_err(&dir);
    assert!(e.contains("manifest.json") && e.contains("bf16"), "{e}");
}

/// An int8 weight with a non-zero zero point (asymmetric) is not the
/// exported pattern: the native engine refuses it naming the node, while
/// tract runs the graph as ONNX defines it.
#[test]
fn an_asymmetric_int8_weight_is_refused_by_the_native_engine_naming_the_node() {
    use diffbc_runtime::onnx as pb;
    use prost::Message;
    let (_tmp, dir) = variant("claw", WeightFormat::Int8);
    let path = dir.join("denoiser.onnx");
    let mut model =
        pb::ModelProto::decode(std::fs::read(&path).expect("read").as_slice()).expect("onnx");
    let g = model.graph.as_mut().expect("graph");
    let zp = g
        .initializer
        .iter_mut()
        .find(|t| t.name.ends_with(".zero_point"))
        .expect("a zero point");
    zp.raw_data[0] = 3;
    let bytes = model.encode_to_vec();
    std::fs::write(&path, &bytes).expect("write");
    let sha = sha256_hex(&path);
    edit_manifest(&dir, |v| v["head"]["sha256"] = sha.into());
    #[cfg(feature = "tract")]
    OnnxModel::load(&dir, EngineChoice::Tract).expect("tract runs an asymmetric weight");
    let e = OnnxModel::load(&dir, EngineChoice::Native)
        .expect_err("native refuses it")
        .to_string();
    assert!(
        e.contains("denoiser.onnx") && e.contains("DequantizeLinear") && e.contains("symmetric"),
        "{e}"
    );
}

/// An initialiser whose values live in an external file (ONNX's
/// `data_location = EXTERNAL`) is refused by the native engine naming the
/// initialiser, not read as an empty tensor.
#[test]
fn an_externally_stored_initialiser_is_refused_naming_it() {
    use diffbc_runtime::onnx as pb;
    use prost::Message;
    let (_tmp, dir) = scratch_copy();
    let path = dir.join("denoiser.onnx");
    let mut model =
        pb::ModelProto::decode(std::fs::read(&path).expect("read").as_slice()).expect("onnx");
    let t = model
        .graph
        .as_mut()
        .expect("graph")
        .initializer
        .iter_mut()
        .find(|t| t.data_type == 1 && !t.raw_data.is_empty())
        .expect("an f32 initialiser");
    let name = t.name.clone();
    t.raw_data.clear();
    t.data_location = Some(pb::tensor_proto::EXTERNAL);
    std::fs::write(&path, model.encode_to_vec()).expect("write");
    let sha = sha256_hex(&path);
    edit_manifest(&dir, |v| v["head"]["sha256"] = sha.into());
    let e = OnnxModel::load(&dir, EngineChoice::Native)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("denoiser.onnx") && e.contains(&name) && e.contains("external file"),
        "{e}"
    );
}
