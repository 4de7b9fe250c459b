//! ROC curves and their area for a detector separating clean from adversarial scores, and
//! the PNG that draws them.

use std::path::Path;

use plotters::prelude::*;

use crate::artifact::files;

/// The area under the ROC curve: P(adversarial score > clean score) + ½ P(equal), by the
/// Mann-Whitney count over the sorted pooled scores; `None` if either side is empty. NaN
/// scores rank above every number (they raise alarms).
pub fn auc(clean: &[f32], adversarial: &[f32]) -> Option<f64> {
    if clean.is_empty() || adversarial.is_empty() {
        return None;
    }
    let key = |v: f32| if v.is_nan() { f32::INFINITY } else { v };
    let mut pooled: Vec<(f32, bool)> = clean
        .iter()
        .map(|v| (key(*v), false))
        .chain(adversarial.iter().map(|v| (key(*v), true)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    // For each adversarial score: clean scores below it, plus half the equal ones.
    let (mut below, mut wins) = (0usize, 0.0f64);
    let mut i = 0;
    while i < pooled.len() {
        let j = pooled[i..]
            .iter()
            .position(|p| p.0 != pooled[i].0)
            .map_or(pooled.len(), |k| i + k);
        let tied_clean = pooled[i..j].iter().filter(|p| !p.1).count();
        let tied_adv = j - i - tied_clean;
        wins += tied_adv as f64 * (below as f64 + 0.5 * tied_clean as f64);
        below += tied_clean;
        i = j;
    }
    Some(wins / (clean.len() as f64 * adversarial.len() as f64))
}

/// The ROC curve's points (false-positive rate, true-positive rate) from (0, 0) to (1, 1),
/// one per distinct threshold; none when either side is empty.
pub fn curve(clean: &[f32], adversarial: &[f32]) -> Vec<(f64, f64)> {
    if clean.is_empty() || adversarial.is_empty() {
        return Vec::new();
    }
    let key = |v: f32| if v.is_nan() { f32::INFINITY } else { v };
    let mut pooled: Vec<(f32, bool)> = clean
        .iter()
        .map(|v| (key(*v), false))
        .chain(adversarial.iter().map(|v| (key(*v), true)))
        .collect();
    // Highest scores first: lowering the threshold adds them to the alarms.
    pooled.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (nc, na) = (clean.len().max(1) as f64, adversarial.len().max(1) as f64);
    let (mut fp, mut tp) = (0usize, 0usize);
    let mut points = vec![(0.0, 0.0)];
    for (i, (v, adv)) in pooled.iter().enumerate() {
        if *adv {
            tp += 1;
        } else {
            fp += 1;
        }
        if pooled.get(i + 1).is_none_or(|next| next.0 != *v) {
            points.push((fp as f64 / nc, tp as f64 / na));
        }
    }
    points
}

/// One panel of the ROC figure: an attack's name and each detector's curve.
pub struct Panel {
    pub title: String,
    pub curves: Vec<(String, Vec<(f64, f64)>)>,
}

/// Draws the panels side by side (at most 4 per row) into `path` (PNG), atomically. Returns
/// whether text could be drawn (a font was found).
pub fn png(panels: &[Panel], path: &Path) -> Result<bool, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let with_text = crate::certify::plot::font_registered();
    let cols = panels.len().clamp(1, 4);
    let rows = panels.len().div_ceil(4).max(1);
    let (w, h) = (360 * cols as u32, 360 * rows as u32);
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let areas = root.split_evenly((rows, cols));
        for (panel, area) in panels.iter().zip(areas) {
            draw(panel, &area, with_text).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    let image = image::RgbImage::from_raw(w, h, pixels).ok_or_else(|| err(&"bad buffer"))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| err(&e))?;
    files::write_atomic(path, &bytes.into_inner()).map_err(|e| e.to_string())?;
    Ok(with_text)
}

fn draw<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    with_text: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if with_text {
        builder
            .caption(&panel.title, ("sans-serif", 16))
            .x_label_area_size(30)
            .y_label_area_size(36);
    }
    let mut chart = builder.build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    if with_text {
        chart
            .configure_mesh()
            .x_desc("false-positive rate")
            .y_desc("detection rate")
            .draw()?;
    }
    chart.draw_series(LineSeries::new(
        [(0.0, 0.0), (1.0, 1.0)],
        ShapeStyle::from(&BLACK.mix(0.3)),
    ))?;
    for (i, (name, points)) in panel.curves.iter().enumerate() {
        if points.len() < 2 {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        let series = chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?;
        if with_text {
            series.label(name.clone()).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
            });
        }
    }
    if with_text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    Ok(())
}
