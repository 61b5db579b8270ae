//! PNG figures: each claw scene with sampled actions drawn over it, one panel
//! per method and sampler (like the paper's Figure 2), labelled with a tiny
//! built-in bitmap font so no font files are needed.

use crate::claw::eval::ScenePoints;
use crate::claw::{SIZE, Scene};
use crate::error::TaskError;
use image::{Rgb, RgbImage};
use std::fmt::Write as _;
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
) -> Result<Vec<std::path::PathBuf>, TaskError> {
    std::fs::create_dir_all(dir).map_err(TaskError::io(dir))?;
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
        img.save(&path).map_err(|e| TaskError::Image {
            path: path.clone(),
            message: e.to_string(),
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Colours of successive series in the charts below.
const PALETTE: [Rgb<u8>; 6] = [
    Rgb([40, 40, 40]),
    Rgb([31, 119, 180]),
    Rgb([214, 39, 40]),
    Rgb([44, 160, 44]),
    Rgb([148, 103, 189]),
    Rgb([255, 127, 14]),
];

fn save(img: &RgbImage, path: &Path) -> Result<(), TaskError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(TaskError::io(parent))?;
    }
    img.save(path).map_err(|e| TaskError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, c);
        }
    }
}

/// A grouped bar chart of shares in [0, 1]: one group per category
/// (labelled 0, 1, …), one bar per series, a legend with the series' names.
pub fn bar_chart(path: &Path, title: &str, series: &[(String, Vec<f64>)]) -> Result<(), TaskError> {
    let categories = series.iter().map(|s| s.1.len()).max().unwrap_or(0) as u32;
    let bar_w = 10u32;
    let group_w = bar_w * series.len() as u32 + 14;
    let (left, top, plot_h) = (40u32, 30u32, 200u32);
    let legend_h = 14 * series.len() as u32 + 8;
    let width = (left + categories * group_w + 20).max(360);
    let height = top + plot_h + 24 + legend_h;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    draw_text(&mut img, 6, 6, title, Rgb([0, 0, 0]));
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    // Axis and a label for the top value.
    fill(&mut img, left - 2, top, 1, plot_h, Rgb([0, 0, 0]));
    fill(
        &mut img,
        left - 2,
        top + plot_h,
        categories * group_w + 4,
        1,
        Rgb([0, 0, 0]),
    );
    draw_text(&mut img, 2, top - 2, &format!("{max:.2}"), Rgb([0, 0, 0]));
    draw_text(&mut img, 2, top + plot_h - 8, "0", Rgb([0, 0, 0]));
    for c in 0..categories {
        let gx = left + c * group_w + 6;
        for (k, (_, values)) in series.iter().enumerate() {
            let v = values.get(c as usize).copied().unwrap_or(0.0).max(0.0);
            let h = ((v / max) * f64::from(plot_h)).round() as u32;
            fill(
                &mut img,
                gx + k as u32 * bar_w,
                top + plot_h - h,
                bar_w - 2,
                h,
                PALETTE[k % PALETTE.len()],
            );
        }
        draw_text(
            &mut img,
            gx,
            top + plot_h + 6,
            &c.to_string(),
            Rgb([0, 0, 0]),
        );
    }
    for (k, (name, _)) in series.iter().enumerate() {
        let y = top + plot_h + 24 + 14 * k as u32;
        fill(&mut img, 8, y, 10, 10, PALETTE[k % PALETTE.len()]);
        draw_text(&mut img, 24, y, name, Rgb([0, 0, 0]));
    }
    save(&img, path)
}

/// Paths in a plane, one panel per series: each path a polyline of
/// `(x, y)` pairs (e.g. two joints of the arm over an episode), and `marks`
/// drawn as rings in every panel (e.g. the targets), and `disc` (centre,
/// radius, in data units; e.g. an obstacle) filled grey. `extent` is the
/// half width of the square shown, centred on 0.
pub fn paths_figure(
    path: &Path,
    panels: &[(String, Vec<Vec<[f32; 2]>>)],
    marks: &[[f32; 2]],
    disc: Option<([f32; 2], f32)>,
    extent: f32,
) -> Result<(), TaskError> {
    let size = 240u32;
    let width = panels.len() as u32 * (size + GAP) + GAP;
    let mut img = RgbImage::from_pixel(
        width.max(size),
        size + LABEL_H + 2 * GAP,
        Rgb([255, 255, 255]),
    );
    let to_px = |v: f32| ((v / extent * 0.5 + 0.5) * (size - 1) as f32).round() as i32;
    for (p, (label, paths)) in panels.iter().enumerate() {
        let x0 = GAP + p as u32 * (size + GAP);
        let y0 = LABEL_H + GAP;
        draw_text(&mut img, x0, 3, label, Rgb([0, 0, 0]));
        fill(&mut img, x0, y0, size, size, Rgb([245, 245, 245]));
        let mut put = |x: i32, y: i32, c: Rgb<u8>| {
            // y up.
            let yy = size as i32 - 1 - y;
            if (0..size as i32).contains(&x) && (0..size as i32).contains(&yy) {
                img.put_pixel(x0 + x as u32, y0 + yy as u32, c);
            }
        };
        if let Some((c, r)) = disc {
            let rp = r / extent * 0.5 * (size - 1) as f32;
            let (cx, cy) = (to_px(c[0]), to_px(c[1]));
            let ri = rp.ceil() as i32;
            for dy in -ri..=ri {
                for dx in -ri..=ri {
                    if ((dx * dx + dy * dy) as f32) <= rp * rp {
                        put(cx + dx, cy + dy, Rgb([200, 200, 200]));
                    }
                }
            }
        }
        for m in marks {
            let (cx, cy) = (to_px(m[0]), to_px(m[1]));
            for a in 0..64 {
                let th = std::f32::consts::TAU * a as f32 / 64.0;
                put(
                    cx + (6.0 * th.cos()).round() as i32,
                    cy + (6.0 * th.sin()).round() as i32,
                    Rgb([0, 0, 0]),
                );
            }
        }
        for (k, line) in paths.iter().enumerate() {
            let c = PALETTE[1 + k % (PALETTE.len() - 1)];
            for w in line.windows(2) {
                let (ax, ay, bx, by) = (
                    to_px(w[0][0]),
                    to_px(w[0][1]),
                    to_px(w[1][0]),
                    to_px(w[1][1]),
                );
                let steps = (bx - ax).abs().max((by - ay).abs()).max(1);
                for s in 0..=steps {
                    let t = s as f32 / steps as f32;
                    put(
                        (ax as f32 + (bx - ax) as f32 * t).round() as i32,
                        (ay as f32 + (by - ay) as f32 * t).round() as i32,
                        c,
                    );
                }
            }
        }
    }
    save(&img, path)
}

/// A scatter plot of labelled points `(label, x, y)` with a log-10 x axis
/// (e.g. actions per second) and a linear y axis; each point is numbered and
/// the legend lists the numbers with their labels.
pub fn scatter_log_x(
    path: &Path,
    title: &str,
    points: &[(String, f64, f64)],
) -> Result<(), TaskError> {
    let (left, top, plot_w, plot_h) = (60u32, 30u32, 520u32, 260u32);
    let legend_h = 14 * points.len() as u32 + 8;
    let (width, height) = (left + plot_w + 30, top + plot_h + 40 + legend_h);
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    draw_text(&mut img, 6, 6, title, Rgb([0, 0, 0]));
    let xs: Vec<f64> = points.iter().map(|p| p.1.max(1e-9).log10()).collect();
    let (mut x0, mut x1) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    if !(x0.is_finite() && x1.is_finite()) {
        (x0, x1) = (0.0, 1.0);
    }
    (x0, x1) = (x0.floor(), x1.ceil().max(x0.floor() + 1.0));
    let y1 = points.iter().map(|p| p.2).fold(0.0f64, f64::max).max(1e-9);
    fill(&mut img, left - 2, top, 1, plot_h, Rgb([0, 0, 0]));
    fill(
        &mut img,
        left - 2,
        top + plot_h,
        plot_w + 4,
        1,
        Rgb([0, 0, 0]),
    );
    draw_text(&mut img, 2, top - 2, &format!("{y1:.2}"), Rgb([0, 0, 0]));
    draw_text(&mut img, 2, top + plot_h - 8, "0", Rgb([0, 0, 0]));
    let decades = (x1 - x0).round() as u32;
    for d in 0..=decades {
        let px = left + (f64::from(d) / f64::from(decades.max(1)) * f64::from(plot_w)) as u32;
        fill(&mut img, px, top + plot_h, 1, 4, Rgb([0, 0, 0]));
        draw_text(
            &mut img,
            px.saturating_sub(8),
            top + plot_h + 8,
            &format!("{:.0}", 10f64.powf(x0 + f64::from(d))),
            Rgb([0, 0, 0]),
        );
    }
    for (k, ((label, _, y), x)) in points.iter().zip(&xs).enumerate() {
        let px = left + (((x - x0) / (x1 - x0)).clamp(0.0, 1.0) * f64::from(plot_w - 6)) as u32;
        let py = top + plot_h - ((y / y1).clamp(0.0, 1.0) * f64::from(plot_h - 6)) as u32 - 6;
        let color = PALETTE[k % PALETTE.len()];
        fill(&mut img, px, py, 6, 6, color);
        draw_text(
            &mut img,
            px + 8,
            py.saturating_sub(2),
            &(k + 1).to_string(),
            color,
        );
        let ly = top + plot_h + 30 + 14 * k as u32;
        fill(&mut img, 8, ly, 10, 10, color);
        draw_text(
            &mut img,
            24,
            ly,
            &format!("{} {label}", k + 1),
            Rgb([0, 0, 0]),
        );
    }
    save(&img, path)
}

/// The quality-against-speed rows as a Markdown table.
pub fn speed_table(speed: &[(String, f64, f64)]) -> String {
    let mut s = String::from("| row | actions/s | quality |\n|---|---|---|\n");
    for (l, x, y) in speed {
        let _ = writeln!(s, "| {l} | {x:.0} | {y:.3} |");
    }
    s
}
