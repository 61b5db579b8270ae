//! Checkpoint → `models/<name>/`.

use crate::graph::GraphBuilder;
use crate::layers::{ToOnnx, emit_basic, emit_sieve, emit_transformer};
use burn::prelude::*;
use diffbc_runtime::golden::{self, GoldenCase, GoldenTensor};
use diffbc_runtime::manifest::{
    self, Conventions, GraphSpec, HeadKind, IR_VERSION, Interface, MANIFEST_FORMAT, Manifest,
    ModeInput, NormalizationSpec, OPSET, ObservationSpec, Provenance, ScheduleSpec,
    UnconditionalEmbedding, files, names,
};
use diffbc_runtime::policy::sha256_hex;
use diffbc_runtime::replay::{self, RecordPlan};
use diffbc_runtime::{NoiseSchedule, SamplerConfig, WeightFormat};
use diffbc_train::checkpoint::{self, CheckpointMeta};
use diffbc_train::data::ObsSpec;
use diffbc_train::model::{Head, Policy, PolicySpec};
use prost::Message;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why an export failed. Nothing is left in the output folder when it does.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The checkpoint could not be loaded (missing file, mismatched weights, …).
    #[error(transparent)]
    Checkpoint(#[from] diffbc_train::TrainError),
    /// The output folder exists.
    #[error("{path} already exists; pass --force to replace it")]
    Exists {
        /// The folder.
        path: PathBuf,
    },
    /// The output path holds something that is not an exported model (a
    /// user's folder or file): refused whatever `force` says.
    #[error(transparent)]
    Output(diffbc_runtime::FileError),
    /// The policy has a part that cannot be exported.
    #[error("cannot export {what}: {why}")]
    Unsupported {
        /// The part.
        what: String,
        /// Why.
        why: String,
    },
    /// A file could not be written.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// What an exported folder may hold, and how one is recognised (its
/// `manifest.json` is JSON with a `format_version`, any version). Only such a
/// folder is ever replaced, and only with `force`.
pub const KIND: diffbc_runtime::fs::OutputKind = diffbc_runtime::fs::OutputKind {
    what: "an exported diffbc model",
    is_dir: true,
    entries: &[
        manifest::MANIFEST_FILE,
        files::ENCODER,
        files::DENOISER,
        files::REGRESSOR,
        files::CLASSIFIER,
        files::GOLDEN,
    ],
    recognise: is_exported_model,
};

fn is_exported_model(dir: &Path) -> bool {
    diffbc_runtime::fs::read(
        &dir.join(manifest::MANIFEST_FILE),
        diffbc_runtime::fs::limits::JSON,
    )
    .ok()
    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    .is_some_and(|v| {
        v.get("format_version")
            .is_some_and(serde_json::Value::is_u64)
    })
}

/// Whether `out` may receive an export: absent, empty, or an exported model
/// with `force`.
fn claim(out: &Path, force: bool) -> Result<(), ExportError> {
    diffbc_runtime::fs::claim_output(out, &KIND, force).map_err(|e| match e {
        diffbc_runtime::FileError::Exists { path, .. } => ExportError::Exists { path },
        other => ExportError::Output(other),
    })
}

/// Export options.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Replace an existing output folder.
    pub force: bool,
    /// Default sampler written to the manifest.
    pub sampler: SamplerConfig,
    /// Batch sizes of the golden cases.
    pub golden_batches: Vec<usize>,
    /// Seed of the golden inputs.
    pub seed: u64,
    /// Overrides the manifest's `provenance.task` (reference models that no
    /// task trained).
    pub task_label: Option<String>,
    /// Overrides the actions executed per chunk (`chunk.execute`); the
    /// horizon is what the head was trained to predict and stays.
    pub execute: Option<usize>,
    /// Channels and deployment settings; `None` takes the checkpoint's
    /// (recorded from its training data).
    pub interface: Option<Interface>,
    /// Named alternative samplers for the manifest; `None` takes
    /// [`default_samplers`] (denoisers only).
    pub samplers: Option<BTreeMap<String, SamplerConfig>>,
    /// Seed of the end-to-end golden episodes.
    pub episode_seed: u64,
    /// How the graphs store their matrix weights (the golden tensors stay
    /// the trainer's f32 outputs; the runtime compares with
    /// [`WeightFormat::golden_tolerance`]).
    pub weights: WeightFormat,
}

/// The alternatives a denoiser's manifest names beside its default sampler:
/// plain DDPM, Diffusion-KDE, DDIM and classifier-free guidance (w = 1) on
/// the default; each gets end-to-end golden cases, so a re-implementation is
/// checked on every part of the sampling procedure. The settings are chosen
/// for that check, not as recommendations: KDE with N = 8 and h = 1
/// (normalised units) so the densities differ and the ranking decides — with
/// the paper's h = 0.1 the candidates of a 32-value chunk are so far apart in
/// h units that every density is 1 and only the tie rule is exercised — and
/// DDIM with S = 7, which does not divide T = 50, so the ceiling in the step
/// list matters.
pub fn default_samplers(default: SamplerConfig, steps: usize) -> BTreeMap<String, SamplerConfig> {
    let mut m = BTreeMap::new();
    if default != SamplerConfig::ddpm() {
        m.insert("ddpm".to_string(), SamplerConfig::ddpm());
    }
    m.insert("kde".to_string(), SamplerConfig::kde(8, 1.0));
    m.insert("ddim".to_string(), SamplerConfig::ddim(7.min(steps)));
    m.insert("guided".to_string(), default.with_guidance(1.0));
    m
}

/// End-to-end episodes recorded at export: one episode of four ticks per
/// sampler (an image-sized frame: two), so that every sampler, the history
/// filling up and a chunk's hand-out ticks are covered while the replay stays
/// cheap — it runs on every engine, in Python, and under qemu-aarch64 in CI.
pub fn episode_plan(frame_len: usize, seed: u64) -> RecordPlan {
    RecordPlan {
        episodes: 1,
        ticks: if frame_len > 1024 { 2 } else { 4 },
        seed,
    }
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            force: false,
            sampler: SamplerConfig::diffusion_x(8),
            golden_batches: vec![1, 64],
            seed: 0,
            task_label: None,
            execute: None,
            interface: None,
            samplers: None,
            episode_seed: 0,
            weights: WeightFormat::F32,
        }
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |e| ExportError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn architecture(spec: &PolicySpec) -> String {
    let enc = match &spec.config.encoder {
        diffbc_train::model::EncoderConfig::Mlp { hidden, embed } => {
            format!("mlp-encoder(hidden={hidden}, embed={embed})")
        }
        diffbc_train::model::EncoderConfig::Cnn { layers, embed } => format!(
            "cnn-encoder({}, embed={embed})",
            layers
                .iter()
                .map(|l| format!("{}/{}", l.channels, l.patch))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    };
    let b = &spec.config.baseline;
    let head = match spec.config.method {
        diffbc_train::Method::Diffusion => match &spec.config.denoiser {
            diffbc_train::model::DenoiserConfig::MlpSieve(c) => {
                format!("mlp-sieve(embed={}, hidden={})", c.embed, c.hidden)
            }
            diffbc_train::model::DenoiserConfig::BasicMlp(c) => {
                format!("basic-mlp(hidden={}, layers={})", c.hidden, c.layers)
            }
            diffbc_train::model::DenoiserConfig::Transformer(c) => format!(
                "transformer(d={}, heads={}, blocks={}, ff={})",
                c.d_model, c.heads, c.blocks, c.feed_forward
            ),
        },
        diffbc_train::Method::Mse => format!("mse-head(hidden={})", spec.config.mse_head.hidden),
        diffbc_train::Method::Discretised => {
            format!("discretised(hidden={}, bins={})", b.hidden, b.bins)
        }
        diffbc_train::Method::KMeans => {
            format!("kmeans(hidden={}, k={})", b.hidden, b.clusters)
        }
        diffbc_train::Method::KMeansResidual => format!(
            "kmeans-residual(hidden={}, k={}, weight={})",
            b.hidden, b.clusters, b.residual_weight
        ),
    };
    format!("{enc} + {head}, history {}", spec.config.history)
}

/// Build both graphs of `policy`.
fn graphs<B: Backend>(policy: &Policy<B>, m: &Manifest) -> (Vec<u8>, Vec<u8>) {
    let (enc_in, enc_out, head_in, head_out) = m.expected_graphs();
    let frames = m.observation.history + 1;
    let mut g = GraphBuilder::new();
    let rows = g.reshape(names::OBSERVATION, &[-1, m.observation.frame_len() as i64]);
    let per_frame = policy.encoder.emit(&mut g, &rows);
    let emb = g.reshape(&per_frame, &[-1, (m.embedding_dim) as i64]);
    debug_assert_eq!(m.embedding_dim % frames, 0);
    let encoder = g
        .finish("diffbc_encoder", &enc_in, &[(emb, enc_out[0].clone())])
        .encode_to_vec();

    let mut g = GraphBuilder::new();
    let out = match &policy.head {
        Head::Sieve(s) => emit_sieve(
            s,
            &mut g,
            names::EMBEDDING,
            names::NOISY_ACTION,
            names::TIME,
        ),
        Head::Basic(s) => emit_basic(
            s,
            &mut g,
            names::EMBEDDING,
            names::NOISY_ACTION,
            names::TIME,
        ),
        Head::Transformer(s) => emit_transformer(
            s,
            &mut g,
            names::EMBEDDING,
            names::NOISY_ACTION,
            names::TIME,
        ),
        Head::Mse(h) => h.emit(&mut g, names::EMBEDDING),
        Head::Bins(h) => h.emit(&mut g, names::EMBEDDING),
        Head::Centres(h) => h.emit(&mut g, names::EMBEDDING),
    };
    let head = g
        .finish("diffbc_head", &head_in, &[(out, head_out[0].clone())])
        .encode_to_vec();
    (encoder, head)
}

/// Random inputs and burn's outputs for both graphs at each batch size.
fn write_golden<B: Backend>(
    policy: &Policy<B>,
    m: &Manifest,
    dir: &Path,
    batches: &[usize],
    seed: u64,
    device: &B::Device,
) -> Result<(), ExportError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal =
        |n: usize| -> Vec<f32> { (0..n).map(|_| StandardNormal.sample(&mut rng)).collect() };
    let to_vec = |t: Tensor<B, 2>| {
        t.into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default()
    };
    let tensor = |v: &[f32], rows: usize| {
        Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), [rows, v.len() / rows]), device)
    };
    let frames = m.observation.history + 1;
    let mut cases = Vec::new();
    let save =
        |name: String, shape: [usize; 2], data: &[f32]| -> Result<GoldenTensor, ExportError> {
            let file = format!("{name}.npy");
            golden::write_npy(&dir.join(&file), &shape, data).map_err(|e| ExportError::Write {
                path: dir.join(&file),
                message: e.to_string(),
            })?;
            Ok(GoldenTensor {
                name: name.split('.').next().unwrap_or_default().to_string(),
                file,
            })
        };
    for &b in batches {
        let obs = normal(b * m.observation.input_len());
        let emb = to_vec(policy.encode(tensor(&obs, b), frames));
        cases.push(GoldenCase {
            graph: "encoder".into(),
            batch: b,
            inputs: vec![rename(
                save(
                    format!("{}.encoder_b{b}", names::OBSERVATION),
                    [b, m.observation.input_len()],
                    &obs,
                )?,
                names::OBSERVATION,
            )],
            outputs: vec![rename(
                save(
                    format!("{}.encoder_b{b}", names::EMBEDDING),
                    [b, m.embedding_dim],
                    &emb,
                )?,
                names::EMBEDDING,
            )],
        });
        let head_emb = normal(b * m.embedding_dim);
        let (inputs, out, out_name) = match m.head_kind {
            HeadKind::Denoiser => {
                let act = normal(b * m.action_dim);
                let t: Vec<f32> = (0..b)
                    .map(|i| ((i % m.schedule.steps) + 1) as f32 / m.schedule.steps as f32)
                    .collect();
                let eps = to_vec(policy.head_forward(
                    tensor(&head_emb, b),
                    tensor(&act, b),
                    tensor(&t, b),
                ));
                let inputs = vec![
                    rename(
                        save(
                            format!("{}.head_b{b}", names::EMBEDDING),
                            [b, m.embedding_dim],
                            &head_emb,
                        )?,
                        names::EMBEDDING,
                    ),
                    rename(
                        save(
                            format!("{}.head_b{b}", names::NOISY_ACTION),
                            [b, m.action_dim],
                            &act,
                        )?,
                        names::NOISY_ACTION,
                    ),
                    rename(
                        save(format!("{}.head_b{b}", names::TIME), [b, 1], &t)?,
                        names::TIME,
                    ),
                ];
                (inputs, eps, names::EPS)
            }
            HeadKind::Regressor | HeadKind::Classifier => {
                let zeros = Tensor::<B, 2>::zeros([b, m.action_dim], device);
                let tz = Tensor::<B, 2>::zeros([b, 1], device);
                let a = to_vec(policy.head_forward(tensor(&head_emb, b), zeros, tz));
                let inputs = vec![rename(
                    save(
                        format!("{}.head_b{b}", names::EMBEDDING),
                        [b, m.embedding_dim],
                        &head_emb,
                    )?,
                    names::EMBEDDING,
                )];
                let name = if m.head_kind == HeadKind::Classifier {
                    names::SCORES
                } else {
                    names::ACTION
                };
                (inputs, a, name)
            }
        };
        let width = out.len() / b;
        let output = rename(
            save(format!("{out_name}.head_b{b}"), [b, width], &out)?,
            out_name,
        );
        cases.push(GoldenCase {
            graph: "head".into(),
            batch: b,
            inputs,
            outputs: vec![output],
        });
    }
    let index = dir.join(golden::INDEX_FILE);
    let text = serde_json::to_string_pretty(&cases).map_err(|e| ExportError::Write {
        path: index.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&index, text + "\n").map_err(write_err(&index))
}

fn rename(mut t: GoldenTensor, name: &str) -> GoldenTensor {
    t.name = name.into();
    t
}

/// Export an in-memory policy into `out` (atomically).
pub fn export_policy<B: Backend>(
    spec: &PolicySpec,
    meta: &CheckpointMeta,
    policy: &Policy<B>,
    out: &Path,
    options: &ExportOptions,
    device: &B::Device,
) -> Result<Manifest, ExportError> {
    claim(out, options.force)?;
    let mut chunk = spec.config.chunk;
    if let Some(e) = options.execute {
        chunk.execute = e;
    }
    chunk.validate().map_err(|why| ExportError::Unsupported {
        what: "execute".into(),
        why,
    })?;
    let schedule =
        NoiseSchedule::new(&spec.config.diffusion).map_err(|e| ExportError::Unsupported {
            what: "schedule".into(),
            why: e.to_string(),
        })?;
    let frame_shape = match spec.obs {
        ObsSpec::Vector { dim } => vec![dim],
        ObsSpec::Image {
            channels,
            height,
            width,
        } => vec![channels, height, width],
    };
    let head_kind = match &policy.head {
        Head::Sieve(_) | Head::Basic(_) | Head::Transformer(_) => HeadKind::Denoiser,
        Head::Mse(_) => HeadKind::Regressor,
        Head::Bins(_) | Head::Centres(_) => HeadKind::Classifier,
    };
    let interface = options
        .interface
        .clone()
        .or_else(|| meta.interface.clone())
        .ok_or_else(|| ExportError::Unsupported {
            what: "the channels".into(),
            why: "the checkpoint predates channel records (names, units, sources, control rate); \
                  pass its training data (`diffbc export --data`) or re-train"
                .into(),
        })?;
    let samplers = match (&options.samplers, head_kind) {
        (Some(s), _) => s.clone(),
        (None, HeadKind::Denoiser) => default_samplers(options.sampler, schedule.steps()),
        (None, _) => BTreeMap::new(),
    };
    let placeholder = GraphSpec {
        file: String::new(),
        sha256: String::new(),
        inputs: vec![],
        outputs: vec![],
    };
    let mut m = Manifest {
        format_version: MANIFEST_FORMAT,
        opset: OPSET,
        ir_version: IR_VERSION,
        observation: ObservationSpec {
            frame_shape,
            history: spec.config.history,
        },
        action_dim: spec.action_dim,
        chunk,
        embedding_dim: spec.embedding_dim(),
        head_kind,
        decoder: policy.decoder(),
        normalization: NormalizationSpec {
            observation: meta.obs_normalizer.clone(),
            action: meta.action_normalizer.clone(),
        },
        schedule: ScheduleSpec {
            steps: schedule.steps(),
            betas: schedule.betas().to_vec(),
        },
        sampler: options.sampler,
        samplers,
        conventions: Conventions {
            mode_input: if spec.config.mode_sets > 0.0 {
                ModeInput::Set
            } else {
                ModeInput::OneHot
            },
            ..Conventions::default()
        },
        channels: interface.channels,
        deployment: interface.deployment,
        unconditional_embedding: UnconditionalEmbedding::Zeros,
        weights: options.weights,
        encoder: placeholder.clone(),
        head: placeholder,
        provenance: Provenance {
            task: options
                .task_label
                .clone()
                .unwrap_or_else(|| spec.config.task.clone()),
            method: spec.config.method.name().into(),
            architecture: architecture(spec),
            training_steps: meta.step,
            seed: spec.config.seed,
            crate_version: env!("CARGO_PKG_VERSION").into(),
        },
    };
    options
        .sampler
        .validate(&schedule)
        .map_err(|e| ExportError::Unsupported {
            what: "sampler".into(),
            why: e.to_string(),
        })?;
    let (enc_in, enc_out, head_in, head_out) = m.expected_graphs();
    let (encoder, head) = graphs(policy, &m);
    let head_file = Manifest::head_file(m.head_kind);
    let reduce = |bytes: Vec<u8>, file: &str| -> Result<Vec<u8>, ExportError> {
        if options.weights.is_f32() {
            return Ok(bytes);
        }
        let (bytes, _) = diffbc_runtime::weights::convert_graph(&bytes, options.weights, file)
            .map_err(|e| ExportError::Unsupported {
                what: format!("{} weights", options.weights),
                why: e.to_string(),
            })?;
        Ok(bytes)
    };
    let encoder = reduce(encoder, files::ENCODER)?;
    let head = reduce(head, head_file)?;
    m.encoder = GraphSpec {
        file: files::ENCODER.into(),
        sha256: sha256_hex(&encoder),
        inputs: enc_in,
        outputs: enc_out,
    };
    m.head = GraphSpec {
        file: head_file.into(),
        sha256: sha256_hex(&head),
        inputs: head_in,
        outputs: head_out,
    };

    // Write everything into a sibling temporary folder, then rename; the
    // staging folder is removed on any error.
    let staged = diffbc_runtime::fs::staging_dir(out).map_err(ExportError::Output)?;
    let tmp = staged.path();
    std::fs::create_dir_all(tmp.join(files::GOLDEN)).map_err(write_err(tmp))?;
    std::fs::write(tmp.join(files::ENCODER), &encoder)
        .map_err(write_err(&tmp.join(files::ENCODER)))?;
    std::fs::write(tmp.join(head_file), &head).map_err(write_err(&tmp.join(head_file)))?;
    write_golden(
        policy,
        &m,
        &tmp.join(files::GOLDEN),
        &options.golden_batches,
        options.seed,
        device,
    )?;
    let mpath = tmp.join(manifest::MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&m).map_err(|e| ExportError::Write {
        path: mpath.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&mpath, text + "\n").map_err(write_err(&mpath))?;
    record_episodes(tmp, &m, options.episode_seed)?;
    diffbc_runtime::fs::replace_dir(staged, out, &KIND).map_err(ExportError::Output)?;
    Ok(m)
}

/// Check the written folder as the runtime will load it and record its
/// end-to-end golden episodes: on the native engine (the control loop's)
/// where it compiles both graphs, else on tract, which runs every exported
/// graph. Every engine must then reproduce them within 1e-4.
pub fn record_episodes(dir: &Path, m: &Manifest, seed: u64) -> Result<(), ExportError> {
    use diffbc_runtime::EngineChoice;
    let plan = episode_plan(m.observation.frame_len(), seed);
    let engine = if diffbc_runtime::OnnxModel::load(dir, EngineChoice::Native).is_ok() {
        EngineChoice::Native
    } else {
        EngineChoice::Tract
    };
    replay::record(dir, engine, &plan).map_err(|e| ExportError::Write {
        path: dir.join(files::GOLDEN).join(files::EPISODES),
        message: format!("{engine}: {e}"),
    })?;
    Ok(())
}

/// Export the EMA weights of a checkpoint folder into `out`.
pub fn export_checkpoint<B: Backend>(
    checkpoint_dir: &Path,
    out: &Path,
    options: &ExportOptions,
    device: &B::Device,
) -> Result<Manifest, ExportError> {
    claim(out, options.force)?;
    let (spec, meta, policy) = checkpoint::load_policy::<B>(checkpoint_dir, device)?;
    export_policy(&spec, &meta, &policy, out, options, device)
}

/// Upgrade a format-1 exported folder `dir` to the current format, into
/// `out` (which may be `dir` itself): the graphs and per-graph golden tensors
/// are kept byte for byte; the manifest gains the conventions, `interface`
/// (channels and deployment settings, read from the training data by the
/// caller) and the named samplers; the end-to-end golden episodes are
/// recorded. `out` other than `dir` follows the usual rules (absent, empty,
/// or an exported model with `force`).
pub fn upgrade(
    dir: &Path,
    out: &Path,
    interface: Interface,
    force: bool,
) -> Result<Manifest, ExportError> {
    let same = out == dir || (out.exists() && dir.canonicalize().ok() == out.canonicalize().ok());
    if !same {
        claim(out, force)?;
    }
    let mpath = dir.join(manifest::MANIFEST_FILE);
    let bad = |message: String| ExportError::Unsupported {
        what: mpath.display().to_string(),
        why: message,
    };
    let bytes = diffbc_runtime::fs::read(&mpath, diffbc_runtime::fs::limits::JSON)
        .map_err(ExportError::Output)?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    match value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(1) => {}
        Some(v) if v == u64::from(MANIFEST_FORMAT) => {
            return Err(bad(format!(
                "already format {MANIFEST_FORMAT}; nothing to upgrade"
            )));
        }
        other => {
            return Err(bad(format!(
                "format_version {other:?}: only format 1 is upgraded"
            )));
        }
    }
    let obj = value
        .as_object_mut()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    obj.insert("format_version".into(), MANIFEST_FORMAT.into());
    let to_value = |v: serde_json::Result<serde_json::Value>| v.map_err(|e| bad(e.to_string()));
    obj.insert(
        "conventions".into(),
        to_value(serde_json::to_value(Conventions::default()))?,
    );
    obj.insert(
        "channels".into(),
        to_value(serde_json::to_value(&interface.channels))?,
    );
    obj.insert(
        "deployment".into(),
        to_value(serde_json::to_value(&interface.deployment))?,
    );
    obj.insert("samplers".into(), serde_json::json!({}));
    let mut m: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if m.head_kind == HeadKind::Denoiser {
        m.samplers = default_samplers(m.sampler, m.schedule.steps);
    }
    m.interface()
        .validate(m.observation.frame_len(), m.step_action_dim())
        .map_err(|e| bad(format!("the data's channels do not fit this policy: {e}")))?;

    let staged = diffbc_runtime::fs::staging_dir(out).map_err(ExportError::Output)?;
    let tmp = staged.path();
    let copy = |name: &str| -> Result<(), ExportError> {
        let from = diffbc_runtime::fs::within(dir, name).map_err(ExportError::Output)?;
        let bytes = diffbc_runtime::fs::read(&from, diffbc_runtime::fs::limits::GRAPH)
            .map_err(ExportError::Output)?;
        let to = tmp.join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        std::fs::write(&to, bytes).map_err(write_err(&to))
    };
    copy(&m.encoder.file)?;
    copy(&m.head.file)?;
    let golden = dir.join(files::GOLDEN);
    let entries = std::fs::read_dir(&golden).map_err(write_err(&golden))?;
    for entry in entries {
        let entry = entry.map_err(write_err(&golden))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map_err(write_err(&golden))?.is_file() && name != files::EPISODES {
            copy(&format!("{}/{name}", files::GOLDEN))?;
        }
    }
    let out_manifest = tmp.join(manifest::MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&m).map_err(|e| bad(e.to_string()))?;
    std::fs::write(&out_manifest, text + "\n").map_err(write_err(&out_manifest))?;
    record_episodes(tmp, &m, 0)?;
    diffbc_runtime::fs::replace_dir(staged, out, &KIND).map_err(ExportError::Output)?;
    Ok(m)
}

/// Write the exported f32 folder `dir` with its weights in `weights` into
/// `out` (absent, empty, or an exported model with `force`): both graphs
/// rewritten ([`diffbc_runtime::weights::write_variant`]), the per-graph
/// golden tensors kept (they stay the trainer's f32 outputs, checked with
/// the format's tolerance) and the end-to-end golden episodes recorded on the
/// new graphs. For folders whose checkpoint is gone, e.g. the shipped
/// `models/`.
pub fn reduce(
    dir: &Path,
    out: &Path,
    weights: WeightFormat,
    force: bool,
) -> Result<Manifest, ExportError> {
    claim(out, force)?;
    let staged = diffbc_runtime::fs::staging_dir(out).map_err(ExportError::Output)?;
    let tmp = staged.path();
    let runtime_err = |e: diffbc_runtime::PolicyError| ExportError::Unsupported {
        what: format!("{} as {weights}", dir.display()),
        why: e.to_string(),
    };
    let m = diffbc_runtime::weights::write_variant(dir, tmp, weights).map_err(runtime_err)?;
    let (from, to) = (dir.join(files::GOLDEN), tmp.join(files::GOLDEN));
    std::fs::create_dir_all(&to).map_err(write_err(&to))?;
    let index = diffbc_runtime::fs::read_to_string(
        &from.join(golden::INDEX_FILE),
        diffbc_runtime::fs::limits::JSON,
    )
    .map_err(ExportError::Output)?;
    let cases: Vec<GoldenCase> =
        serde_json::from_str(&index).map_err(|e| ExportError::Unsupported {
            what: from.join(golden::INDEX_FILE).display().to_string(),
            why: e.to_string(),
        })?;
    for t in cases.iter().flat_map(|c| c.inputs.iter().chain(&c.outputs)) {
        let src = diffbc_runtime::fs::within(&from, &t.file).map_err(ExportError::Output)?;
        let bytes = diffbc_runtime::fs::read(&src, diffbc_runtime::fs::limits::NPY)
            .map_err(ExportError::Output)?;
        std::fs::write(to.join(&t.file), bytes).map_err(write_err(&to.join(&t.file)))?;
    }
    std::fs::write(to.join(golden::INDEX_FILE), index)
        .map_err(write_err(&to.join(golden::INDEX_FILE)))?;
    record_episodes(tmp, &m, 0)?;
    diffbc_runtime::fs::replace_dir(staged, out, &KIND).map_err(ExportError::Output)?;
    Ok(m)
}
