//! The claw-machine scenes of the paper (Figure 2): seven 64×64 RGB images
//! with one to three objects each. The demonstrator picks a pixel uniformly
//! over all object pixels of the scene, so p(action | observation) is known
//! exactly: uniform over the objects' area.
//!
//! Actions are continuous: the pixel's `(column + u, row + v) / 64` with u, v
//! uniform in [0, 1), so the true density is exactly uniform over the object
//! mask and "on an object" means `mask[floor(64 y)][floor(64 x)] > 0`.

pub mod eval;

use crate::error::{TaskError, read_json};
use rand::Rng;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Image side in pixels.
pub const SIZE: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SceneEntry {
    scene: usize,
    objects: Vec<String>,
    pixels_per_object: Vec<usize>,
}

/// One scene: its image, its label mask and its objects.
#[derive(Debug, Clone)]
pub struct Scene {
    /// Scene number.
    pub id: usize,
    /// Channel-major RGB in [0, 1], `[3, 64, 64]`.
    pub image: Vec<f32>,
    /// The raw RGB8 pixels (for drawing), row-major `[64, 64, 3]`.
    pub rgb: Vec<u8>,
    /// Label per pixel, row-major: 0 background, i = object i (1-based).
    pub mask: Vec<u8>,
    /// Object file names, in label order.
    pub objects: Vec<String>,
    /// Pixel count of each object, from the mask.
    pub object_pixels: Vec<usize>,
    /// Indices of all object pixels (row * 64 + column).
    pub object_cells: Vec<u32>,
}

impl Scene {
    /// Label under a continuous action `(x, y)` in [0, 1)², or `None` outside the image.
    pub fn label_at(&self, x: f32, y: f32) -> Option<u8> {
        let (c, r) = ((x * SIZE as f32).floor(), (y * SIZE as f32).floor());
        if !(0.0..SIZE as f32).contains(&c) || !(0.0..SIZE as f32).contains(&r) {
            return None;
        }
        Some(self.mask[r as usize * SIZE + c as usize])
    }

    /// Draw an action from the true distribution: uniform over the object area.
    pub fn draw_action<R: Rng>(&self, rng: &mut R) -> [f32; 2] {
        let cell = self.object_cells[rng.random_range(0..self.object_cells.len())] as usize;
        let (r, c) = (cell / SIZE, cell % SIZE);
        [
            (c as f32 + rng.random::<f32>()) / SIZE as f32,
            (r as f32 + rng.random::<f32>()) / SIZE as f32,
        ]
    }
}

/// All scenes of a claw data folder.
#[derive(Debug, Clone)]
pub struct ClawScenes {
    /// Where they were read from.
    pub dir: PathBuf,
    /// The scenes, in `scenes.json` order.
    pub scenes: Vec<Scene>,
}

fn load_png(path: &Path) -> Result<image::DynamicImage, TaskError> {
    let bytes = diffbc_runtime::fs::read(path, diffbc_runtime::fs::limits::IMAGE)?;
    let img =
        image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).map_err(|e| {
            TaskError::Image {
                path: path.to_path_buf(),
                message: format!("not a valid PNG: {e}"),
            }
        })?;
    if img.width() as usize != SIZE || img.height() as usize != SIZE {
        return Err(TaskError::Image {
            path: path.to_path_buf(),
            message: format!(
                "expected {SIZE}×{SIZE} pixels, found {}×{}",
                img.width(),
                img.height()
            ),
        });
    }
    Ok(img)
}

impl ClawScenes {
    /// Read `scenes.json`, `scene_K.png` and `mask_K.png` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TaskError> {
        if !dir.is_dir() {
            return Err(TaskError::Io {
                path: dir.to_path_buf(),
                cause: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "claw data folder not found (expected scenes.json, scene_K.png, mask_K.png; pass --data)",
                ),
            });
        }
        let index_path = dir.join("scenes.json");
        let entries: Vec<SceneEntry> = read_json(&index_path)?;
        if entries.is_empty() {
            return Err(TaskError::Json {
                path: index_path,
                message: "no scenes listed".into(),
            });
        }
        let mut scenes = Vec::with_capacity(entries.len());
        for e in entries {
            let scene_path = dir.join(format!("scene_{}.png", e.scene));
            let mask_path = dir.join(format!("mask_{}.png", e.scene));
            let rgb = load_png(&scene_path)?.to_rgb8().into_raw();
            let mask = load_png(&mask_path)?.to_luma8().into_raw();
            let n_obj = e.objects.len();
            if e.pixels_per_object.len() != n_obj {
                return Err(TaskError::Json {
                    path: index_path.clone(),
                    message: format!(
                        "scene {}: {} objects but {} pixel counts",
                        e.scene,
                        n_obj,
                        e.pixels_per_object.len()
                    ),
                });
            }
            let mut object_pixels = vec![0usize; n_obj];
            let mut object_cells = Vec::new();
            for (i, &l) in mask.iter().enumerate() {
                if l as usize > n_obj {
                    return Err(TaskError::Image {
                        path: mask_path.clone(),
                        message: format!(
                            "pixel ({}, {}) has label {l} but the scene has {n_obj} objects",
                            i % SIZE,
                            i / SIZE
                        ),
                    });
                }
                if l > 0 {
                    object_pixels[l as usize - 1] += 1;
                    object_cells.push(i as u32);
                }
            }
            if let Some(k) = object_pixels.iter().position(|&p| p == 0) {
                return Err(TaskError::Image {
                    path: mask_path,
                    message: format!("object {} ({}) has no pixels", k + 1, e.objects[k]),
                });
            }
            if object_pixels != e.pixels_per_object {
                tracing::warn!(
                    scene = e.scene,
                    mask = ?object_pixels,
                    listed = ?e.pixels_per_object,
                    "pixel counts in scenes.json differ from the mask; using the mask"
                );
            }
            let mut image = vec![0.0f32; 3 * SIZE * SIZE];
            for (p, px) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    image[c * SIZE * SIZE + p] = px[c] as f32 / 255.0;
                }
            }
            scenes.push(Scene {
                id: e.scene,
                image,
                rgb,
                mask,
                objects: e.objects,
                object_pixels,
                object_cells,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            scenes,
        })
    }
}

/// The claw scenes as training data (with the `train` feature).
#[cfg(feature = "train")]
impl ClawScenes {
    /// The observation shape.
    pub fn obs_spec() -> diffbc_train::data::ObsSpec {
        diffbc_train::data::ObsSpec::Image {
            channels: 3,
            height: SIZE,
            width: SIZE,
        }
    }

    /// Draw `n` (scene, action) pairs as in the paper: a scene uniformly, then
    /// an action uniformly over its object pixels. Frame `k` is scene `k`.
    pub fn dataset(&self, n: usize, seed: u64) -> diffbc_train::data::Dataset {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut frames = Vec::with_capacity(self.scenes.len() * 3 * SIZE * SIZE);
        for s in &self.scenes {
            frames.extend_from_slice(&s.image);
        }
        let mut frame_index = Vec::with_capacity(n);
        let mut actions = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let k = rng.random_range(0..self.scenes.len());
            frame_index.push(k as u32);
            actions.extend_from_slice(&self.scenes[k].draw_action(&mut rng));
        }
        let interface = Self::interface(&frames, &actions);
        diffbc_train::data::Dataset {
            obs: Self::obs_spec(),
            action_dim: 2,
            history: 0,
            horizon: 1,
            frames,
            frame_index,
            actions,
            interface: Some(interface),
        }
    }

    /// One image channel (the camera, RGB in [0, 1], channel-major) and the
    /// claw's position in image coordinates; no control rate (one decision
    /// per scene).
    fn interface(frames: &[f32], actions: &[f32]) -> diffbc_runtime::manifest::Interface {
        use diffbc_runtime::manifest::{
            ActionChannel, ActionKind, Channels, Deployment, Interface, ObservationChannel,
        };
        let span = |v: &mut dyn Iterator<Item = f32>| {
            v.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            })
        };
        let (min, max) = span(&mut frames.iter().copied());
        let action = |i: usize, name: &str, unit: &str| {
            let (min, max) = span(&mut actions.iter().skip(i).step_by(2).copied());
            ActionChannel {
                name: name.into(),
                unit: unit.into(),
                target: name.into(),
                kind: ActionKind::Absolute,
                min,
                max,
                max_step: None,
            }
        };
        Interface {
            channels: Channels {
                observation: vec![ObservationChannel {
                    name: "camera.rgb".into(),
                    unit: "1".into(),
                    source: "camera.rgb".into(),
                    shape: vec![3, SIZE, SIZE],
                    min,
                    max,
                }],
                action: vec![
                    action(0, "claw.x", "image width"),
                    action(1, "claw.y", "image height"),
                ],
            },
            deployment: Deployment::default(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn shared_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/claw")
    }

    #[test]
    fn loads_the_seven_scenes_and_draws_on_objects() {
        use rand::SeedableRng;
        let s = ClawScenes::load(&shared_dir()).expect("shared claw data");
        assert_eq!(s.scenes.len(), 7);
        assert_eq!(
            s.scenes.iter().map(|c| c.objects.len()).collect::<Vec<_>>(),
            [1, 1, 2, 2, 2, 3, 1],
            "objects per scene"
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for scene in &s.scenes {
            for _ in 0..500 {
                let [x, y] = scene.draw_action(&mut rng);
                assert!(scene.label_at(x, y).expect("inside") > 0, "off-object draw");
            }
        }
    }

    #[cfg(feature = "train")]
    #[test]
    fn the_training_data_draws_scenes_then_points_on_their_objects() {
        let s = ClawScenes::load(&shared_dir()).expect("shared claw data");
        let d = s.dataset(2000, 1);
        d.validate().expect("valid");
        for i in 0..d.len() {
            let scene = &s.scenes[d.frame_index[i] as usize];
            let l = scene
                .label_at(d.actions[2 * i], d.actions[2 * i + 1])
                .expect("inside");
            assert!(l > 0, "sample {i} is off-object");
        }
        // Same seed, same data.
        assert_eq!(s.dataset(100, 3).actions, s.dataset(100, 3).actions);
    }

    #[test]
    fn bad_folders_and_files_are_named() {
        let e = ClawScenes::load(Path::new("/nonexistent/claw"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/claw") && e.contains("not found"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("tmp");
        for f in ["scenes.json", "scene_0.png", "mask_0.png"] {
            std::fs::copy(shared_dir().join(f), dir.path().join(f)).expect("copy");
        }
        std::fs::write(
            dir.path().join("scenes.json"),
            r#"[{"scene":0,"objects":["ball1.png"],"pixels_per_object":[206]}]"#,
        )
        .expect("write");
        ClawScenes::load(dir.path()).expect("one scene loads");
        std::fs::write(dir.path().join("scene_0.png"), b"\x89PNG\r\n\x1a\ngarbage").expect("write");
        let e = ClawScenes::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("scene_0.png") && e.contains("not a valid PNG"),
            "{e}"
        );
    }
}
