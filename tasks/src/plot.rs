//! PNG figures, drawn with `plotters` (bitmap backend, the system's
//! sans-serif font through fontconfig) into a buffer and written with the
//! `image` crate: each claw scene with sampled actions over it, one panel per
//! method and sampler (like the paper's Figure 2); grouped bars; paths in a
//! plane; a log-x scatter.

use crate::claw::eval::ScenePoints;
use crate::claw::{SIZE, Scene};
use crate::error::TaskError;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Pixels per scene pixel in the claw figures.
const SCALE: u32 = 4;
/// The font of every label.
const FONT: &str = "sans-serif";

/// Colours of successive series.
const PALETTE: [RGBColor; 6] = [
    RGBColor(40, 40, 40),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

fn color(k: usize) -> RGBColor {
    PALETTE[k % PALETTE.len()]
}

/// Draw a `width × height` figure with `draw` and write it to `path` as PNG.
/// A drawing error names the figure (the usual one: no sans-serif font on
/// this machine).
fn figure(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), TaskError> {
    let fail = |message: String| TaskError::Image {
        path: path.to_path_buf(),
        message: format!(
            "drawing the figure: {message} (figures need a sans-serif font, e.g. the fonts-dejavu-core package)"
        ),
    };
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(TaskError::io(parent))?;
    }
    let img = image::RgbImage::from_raw(width, height, buf).ok_or_else(|| TaskError::Image {
        path: path.to_path_buf(),
        message: "figure buffer has the wrong size".into(),
    })?;
    img.save(path).map_err(|e| TaskError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `?` for plotters' errors inside a drawing closure.
fn d<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// Write `<dir>/scene_<K>.png` for every scene: one panel per row of `rows`,
/// the scene (faded) with each sampled action drawn as a dot (green on an
/// object, red off it), titled with the row's label.
pub fn write_scene_figures(
    dir: &Path,
    scenes: &[Scene],
    rows: &[ScenePoints],
) -> Result<Vec<std::path::PathBuf>, TaskError> {
    std::fs::create_dir_all(dir).map_err(TaskError::io(dir))?;
    let panel = SIZE as u32 * SCALE;
    let (gap, title) = (8u32, 22u32);
    let mut written = Vec::new();
    for (k, scene) in scenes.iter().enumerate() {
        let width = rows.len().max(1) as u32 * (panel + gap) + gap;
        let path = dir.join(format!("scene_{}.png", scene.id));
        figure(&path, (width, panel + title + 2 * gap), |root| {
            for (p, row) in rows.iter().enumerate() {
                let x0 = (gap + p as u32 * (panel + gap)) as i32;
                let area = root.margin(0, 0, x0 as u32, 0);
                d(area.draw(&Text::new(
                    row.label.clone(),
                    (0, 4),
                    (FONT, 14).into_font(),
                )))?;
                let y0 = (title + gap) as i32;
                // The scene, faded so the dots stand out: one square per pixel.
                for (i, px) in scene.rgb.chunks_exact(3).enumerate() {
                    let (r, c) = ((i / SIZE) as i32, (i % SIZE) as i32);
                    let fade = |v: u8| (v as u16 / 2 + 128) as u8;
                    let s = SCALE as i32;
                    d(root.draw(&Rectangle::new(
                        [(x0 + c * s, y0 + r * s), (x0 + c * s + s, y0 + r * s + s)],
                        RGBColor(fade(px[0]), fade(px[1]), fade(px[2])).filled(),
                    )))?;
                }
                let Some(points) = row.points.get(k) else {
                    continue;
                };
                for pt in points.chunks_exact(2) {
                    let on = matches!(scene.label_at(pt[0], pt[1]), Some(l) if l > 0);
                    let c = if on {
                        RGBColor(0, 150, 0)
                    } else {
                        RGBColor(220, 0, 0)
                    };
                    let (x, y) = (pt[0] * panel as f32, pt[1] * panel as f32);
                    if (0.0..panel as f32).contains(&x) && (0.0..panel as f32).contains(&y) {
                        d(root.draw(&Circle::new((x0 + x as i32, y0 + y as i32), 2, c.filled())))?;
                    }
                }
            }
            Ok(())
        })?;
        written.push(path);
    }
    Ok(written)
}

/// A grouped bar chart of shares: one group per category (labelled 0, 1,
/// …), one bar per series, a legend with the series' names.
pub fn bar_chart(path: &Path, title: &str, series: &[(String, Vec<f64>)]) -> Result<(), TaskError> {
    let categories = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(1);
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let n = series.len().max(1) as f64;
    figure(path, (640, 400), |root| {
        let mut chart = d(ChartBuilder::on(root)
            .caption(title, (FONT, 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(-0.5f64..categories as f64 - 0.5, 0f64..max * 1.1))?;
        d(chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(categories)
            .x_label_formatter(&|x| format!("{:.0}", x.round()))
            .x_desc("category")
            .y_desc("share")
            .draw())?;
        for (k, (name, values)) in series.iter().enumerate() {
            let c = color(k);
            let bars = values.iter().enumerate().map(|(i, &v)| {
                let x = i as f64 - 0.4 + 0.8 * k as f64 / n;
                Rectangle::new([(x, 0.0), (x + 0.8 / n, v.max(0.0))], c.filled())
            });
            d(chart.draw_series(bars))?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        }
        d(chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw())
    })
}

/// Paths in a plane, one panel per series (at most 8 a row): each path a polyline of
/// `(x, y)` pairs (e.g. two joints of the arm over an episode), `marks`
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
    let size = 300u32;
    // At most 8 panels a row.
    let n = panels.len().max(1);
    let rows = n.div_ceil(8);
    let cols = n.div_ceil(rows);
    figure(path, (cols as u32 * size, rows as u32 * size), |root| {
        let areas = root.split_evenly((rows, cols));
        for ((label, paths), area) in panels.iter().zip(&areas) {
            let e = f64::from(extent);
            let mut chart = d(ChartBuilder::on(area)
                .caption(label, (FONT, 14))
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(30)
                .build_cartesian_2d(-e..e, -e..e))?;
            d(chart.configure_mesh().light_line_style(WHITE).draw())?;
            if let Some((c, r)) = disc {
                // A filled disc in data units: a polygon of 64 corners.
                let ring = (0..64).map(|a| {
                    let th = std::f64::consts::TAU * f64::from(a) / 64.0;
                    (
                        f64::from(c[0]) + f64::from(r) * th.cos(),
                        f64::from(c[1]) + f64::from(r) * th.sin(),
                    )
                });
                d(chart.draw_series(std::iter::once(Polygon::new(
                    ring.collect::<Vec<_>>(),
                    RGBColor(200, 200, 200).filled(),
                ))))?;
            }
            for (k, line) in paths.iter().enumerate() {
                let c = color(1 + k % (PALETTE.len() - 1));
                d(chart.draw_series(LineSeries::new(
                    line.iter().map(|p| (f64::from(p[0]), f64::from(p[1]))),
                    c,
                )))?;
            }
            d(chart.draw_series(
                marks
                    .iter()
                    .map(|m| Circle::new((f64::from(m[0]), f64::from(m[1])), 6, BLACK)),
            ))?;
        }
        Ok(())
    })
}

/// A scatter plot of labelled points `(label, x, y)` with a log-10 x axis
/// (e.g. actions per second) and a linear y axis; each point is numbered and
/// the legend lists the numbers with their labels.
pub fn scatter_log_x(
    path: &Path,
    title: &str,
    points: &[(String, f64, f64)],
) -> Result<(), TaskError> {
    let xs: Vec<f64> = points.iter().map(|p| p.1.max(1e-9)).collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
        )
    } else {
        (1.0, 10.0)
    };
    let y1 = points.iter().map(|p| p.2).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let height = 420 + 16 * points.len() as u32;
    figure(path, (720, height), |root| {
        let (plot, legend) = root.split_vertically(420);
        let mut chart = d(ChartBuilder::on(&plot)
            .caption(title, (FONT, 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..y1))?;
        d(chart
            .configure_mesh()
            .x_desc("actions per second")
            .y_desc("quality")
            .draw())?;
        for (k, ((_, _, y), &x)) in points.iter().zip(&xs).enumerate() {
            let c = color(k);
            d(chart.draw_series(std::iter::once(Circle::new((x, *y), 4, c.filled()))))?;
            d(chart.draw_series(std::iter::once(Text::new(
                (k + 1).to_string(),
                (x, *y),
                (FONT, 12).into_font().color(&c),
            ))))?;
        }
        for (k, (label, x, y)) in points.iter().enumerate() {
            d(legend.draw(&Text::new(
                format!("{}  {label}: {x:.0}/s, {y:.3}", k + 1),
                (12, 16 * k as i32),
                (FONT, 12).into_font().color(&color(k)),
            )))?;
        }
        Ok(())
    })
}

/// The quality-against-speed rows as a Markdown table.
pub fn speed_table(speed: &[(String, f64, f64)]) -> String {
    let mut s = String::from("| row | actions/s | quality |\n|---|---|---|\n");
    for (l, x, y) in speed {
        let _ = writeln!(s, "| {l} | {x:.0} | {y:.3} |");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dark_pixels(path: &Path) -> usize {
        let img = image::open(path).expect("a PNG").to_rgb8();
        img.pixels()
            .filter(|p| p.0.iter().all(|&v| v < 100))
            .count()
    }

    /// Every figure is a PNG with text and axes in it (dark pixels: labels,
    /// ticks, lines), and its size follows the data.
    #[test]
    fn figures_are_drawn_with_labels_and_axes() {
        let dir = tempfile::tempdir().expect("tmp");
        let bars = dir.path().join("bars.png");
        bar_chart(
            &bars,
            "share of episodes by first target",
            &[
                ("a".into(), vec![0.2, 0.5, 0.3]),
                ("b".into(), vec![0.4, 0.4, 0.2]),
            ],
        )
        .expect("bars");
        assert!(dark_pixels(&bars) > 500, "{}", dark_pixels(&bars));

        let paths = dir.path().join("paths.png");
        let line = vec![[-1.0f32, -1.0], [0.0, 0.5], [1.0, 1.0]];
        paths_figure(
            &paths,
            &[("x".into(), vec![line.clone()]), ("y".into(), vec![line])],
            &[[0.5, 0.5]],
            Some(([0.0, 0.0], 0.3)),
            2.0,
        )
        .expect("paths");
        let img = image::open(&paths).expect("png");
        assert_eq!(
            (img.width(), img.height()),
            (600, 300),
            "one panel per series"
        );

        let scatter = dir.path().join("scatter.png");
        scatter_log_x(
            &scatter,
            "quality vs speed",
            &[("fast".into(), 2000.0, 0.5), ("slow".into(), 5.0, 0.9)],
        )
        .expect("scatter");
        assert!(dark_pixels(&scatter) > 500);
        // Empty inputs still give a figure, not a panic.
        scatter_log_x(&scatter, "none", &[]).expect("empty scatter");
        bar_chart(&bars, "none", &[]).expect("empty bars");
    }
}
