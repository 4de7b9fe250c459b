//! A PNG plot of certified accuracy against L2 radius, as in Cohen et al.'s figures.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::run::{Row, certified_accuracy};
use crate::artifact::files;

/// Fonts tried for the axis labels (Debian's fonts-dejavu-core); without one the plot is
/// drawn without text and the caller is told.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

pub fn font_registered() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// Draws certified accuracy for radii 0..max into `path` (PNG, 800x500), atomically. Returns
/// whether axis labels could be drawn (a font was found).
pub fn certified_accuracy_png(rows: &[Row], title: &str, path: &Path) -> Result<bool, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let with_text = font_registered();
    let (w, h) = (800u32, 500u32);
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    draw(rows, title, with_text, &mut pixels, (w, h)).map_err(|e| err(&e))?;
    let image = image::RgbImage::from_raw(w, h, pixels).ok_or_else(|| err(&"bad buffer"))?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| err(&e))?;
    files::write_atomic(path, png.get_ref()).map_err(|e| e.to_string())?;
    Ok(with_text)
}

fn draw(
    rows: &[Row],
    title: &str,
    with_text: bool,
    pixels: &mut [u8],
    size: (u32, u32),
) -> Result<(), Box<dyn std::error::Error>> {
    let max_r = rows.iter().map(|r| r.radius).fold(1.0f64, f64::max) * 1.05;
    let curve: Vec<(f64, f64)> = (0..=400)
        .map(|i| {
            let r = max_r * i as f64 / 400.0;
            (r, certified_accuracy(rows, r))
        })
        .collect();
    let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if with_text {
        builder
            .caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(50);
    }
    let mut chart = builder.build_cartesian_2d(0.0..max_r, 0.0..1.0)?;
    let mut mesh = chart.configure_mesh();
    if with_text {
        mesh.x_desc("L2 radius").y_desc("certified accuracy");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    chart.draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))?;
    root.present()?;
    Ok(())
}
