//! PNG figures: each claw scene with sampled actions drawn over it, one panel
//! per method and sampler (like the paper's Figure 2), labelled with a tiny
//! built-in bitmap font so no font files are needed.

use crate::error::TrainError;
use crate::eval::ScenePoints;
use crate::task::claw::{SIZE, Scene};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Pixels per scene pixel in the figure.
const SCALE: u32 = 4;
const GAP: u32 = 6;
const LABEL_H: u32 = 16;

/// 3×5 glyphs, row-major, 15 bits each ('1' = ink).
fn glyph(c: char) -> Option<&'static str> {
    Some(match c.to_ascii_uppercase() {
        'A' => "010101111101101",
        'B' => "110101110101110",
        'C' => "011100100100011",
        'D' => "110101101101110",
        'E' => "111100110100111",
        'F' => "111100110100100",
        'G' => "011100101101011",
        'H' => "101101111101101",
        'I' => "111010010010111",
        'J' => "001001001101010",
        'K' => "101101110101101",
        'L' => "100100100100111",
        'M' => "101111111101101",
        'N' => "110101101101101",
        'O' => "010101101101010",
        'P' => "110101110100100",
        'Q' => "010101101110011",
        'R' => "110101110101101",
        'S' => "011100010001110",
        'T' => "111010010010010",
        'U' => "101101101101111",
        'V' => "101101101101010",
        'W' => "101101111111101",
        'X' => "101101010101101",
        'Y' => "101101010010010",
        'Z' => "111001010100111",
        '0' => "111101101101111",
        '1' => "010110010010111",
        '2' => "110001010100111",
        '3' => "110001010001110",
        '4' => "101101111001001",
        '5' => "111100110001110",
        '6' => "011100111101111",
        '7' => "111001010010010",
        '8' => "111101111101111",
        '9' => "111101111001110",
        '(' => "010100100100010",
        ')' => "010001001001010",
        '=' => "000111000111000",
        '-' => "000000111000000",
        '+' => "000010111010000",
        '.' => "000000000000010",
        ' ' => "000000000000000",
        '_' => "000000000000111",
        ':' => "000010000010000",
        _ => return None,
    })
}

/// Draw `text` at (x, y) with 2× glyphs.
fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, color: Rgb<u8>) {
    let mut cx = x;
    for ch in text.chars() {
        let g = glyph(ch).unwrap_or("111101101101111");
        for (i, bit) in g.bytes().enumerate() {
            if bit == b'1' {
                let (gx, gy) = (cx + 2 * (i as u32 % 3), y + 2 * (i as u32 / 3));
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    if gx + dx < img.width() && gy + dy < img.height() {
                        img.put_pixel(gx + dx, gy + dy, color);
                    }
                }
            }
        }
        cx += 8;
    }
}

/// Write `<dir>/scene_<K>.png` for every scene: one panel per row of `rows`,
/// the scene upscaled with each sampled action drawn as a dot (green on an
/// object, red off it).
pub fn write_scene_figures(
    dir: &Path,
    scenes: &[Scene],
    rows: &[ScenePoints],
) -> Result<Vec<std::path::PathBuf>, TrainError> {
    std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    let panel = SIZE as u32 * SCALE;
    let mut written = Vec::new();
    for (k, scene) in scenes.iter().enumerate() {
        let width = rows.len() as u32 * (panel + GAP) + GAP;
        let mut img = RgbImage::from_pixel(width, panel + LABEL_H + 2 * GAP, Rgb([255, 255, 255]));
        for (p, row) in rows.iter().enumerate() {
            let x0 = GAP + p as u32 * (panel + GAP);
            let y0 = LABEL_H + GAP;
            draw_text(&mut img, x0, 3, &row.label, Rgb([0, 0, 0]));
            for y in 0..panel {
                for x in 0..panel {
                    let i = ((y / SCALE) as usize * SIZE + (x / SCALE) as usize) * 3;
                    // Fade the scene so the dots stand out.
                    let px = Rgb([0, 1, 2].map(|c| (scene.rgb[i + c] as u16 / 2 + 128) as u8));
                    img.put_pixel(x0 + x, y0 + y, px);
                }
            }
            let Some(points) = row.points.get(k) else {
                continue;
            };
            for pt in points.chunks_exact(2) {
                let on = matches!(scene.label_at(pt[0], pt[1]), Some(l) if l > 0);
                let color = if on {
                    Rgb([0, 150, 0])
                } else {
                    Rgb([220, 0, 0])
                };
                let (cx, cy) = (pt[0] * panel as f32, pt[1] * panel as f32);
                for dy in -1i32..=1 {
                    for dx in -1i32..=1 {
                        let (x, y) = (cx as i32 + dx, cy as i32 + dy);
                        if (0..panel as i32).contains(&x) && (0..panel as i32).contains(&y) {
                            img.put_pixel(x0 + x as u32, y0 + y as u32, color);
                        }
                    }
                }
            }
        }
        let path = dir.join(format!("scene_{}.png", scene.id));
        img.save(&path).map_err(|e| TrainError::Image {
            path: path.clone(),
            message: e.to_string(),
        })?;
        written.push(path);
    }
    Ok(written)
}
